/**
 * The libc boundary: the one module that talks to koffi.
 *
 * Every function here has a typed signature, reads `koffi.errno()` immediately after the call and
 * throws an error shaped like Node's own system errors (`errno` negative, `code`, `syscall`), so
 * callers handle `err.code === 'EAGAIN'` exactly as they would for `fs`. Callers never see koffi.
 *
 * Buffers passed to these functions are used in place (koffi passes a Buffer's memory as the
 * pointer), so a caller can reuse one buffer for every call on a hot path.
 */
import koffi from 'koffi';
import util from 'node:util';
import { CMSGHDR, IOVEC, MMSGHDR, SIGINFO, TIMEVAL } from './structs';

const libc = koffi.load('libc.so.6');

/** A failed system call, shaped like Node's `ErrnoException`. */
export interface SyscallError extends Error {
  errno: number;
  code: string;
  syscall: string;
  path?: string;
}

/** Build a Node-shaped error for `syscall` failing with positive errno `e`. */
export function syscallError(syscall: string, e: number, path?: string): SyscallError {
  const [code, message] = errnoNames().get(-e) ?? [`E${e}`, `errno ${e}`];
  const where = path !== undefined ? ` '${path}'` : '';
  const err = new Error(`${syscall}${where} failed: ${code} (${message})`) as SyscallError;
  err.errno = -e;
  err.code = code;
  err.syscall = syscall;
  if (path !== undefined) err.path = path;
  return err;
}

let errnoMap: Map<number, [string, string]> | undefined;
function errnoNames(): Map<number, [string, string]> {
  errnoMap ??= util.getSystemErrorMap();
  return errnoMap;
}

/** True when `err` is a SyscallError with the given code. */
export function isSyscallError(err: unknown, code?: string): err is SyscallError {
  return (
    err instanceof Error &&
    typeof (err as Partial<SyscallError>).syscall === 'string' &&
    (code === undefined || (err as SyscallError).code === code)
  );
}

/** Positive errno values used by callers (Linux x86_64/aarch64, include/uapi/asm-generic/errno*.h). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EMFILE: 24,
  ENOSPC: 28,
  EROFS: 30,
  ENOSYS: 38,
  EPROTO: 71,
  ECONNABORTED: 103,
  ENOBUFS: 105,
  /** Not in Node's os.constants.errno. */
  ESHUTDOWN: 108,
  ECONNREFUSED: 111,
} as const;

// struct iovec and struct msghdr (include/linux/socket.h, LP64) for sendmsg(2): koffi lays them
// out; their pointer members take Buffers, used in place for the call.
// Anonymous types: jest loads this module once per test file into one process, and koffi's type
// names are process-wide.
const IOVEC_TYPE = koffi.struct({ base: 'void *', len: 'size_t' });
const MSGHDR_TYPE = koffi.struct({
  name: 'void *',
  namelen: 'uint32_t',
  iov: koffi.pointer(IOVEC_TYPE),
  iovlen: 'size_t',
  control: 'void *',
  controllen: 'size_t',
  flags: 'int',
});

// ---------------------------------------------------------------------------------------------
// Raw prototypes. `long` is ssize_t on LP64 Linux.

const c = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, void *addr, uint32_t addrlen)'),
  send: libc.func('long send(int fd, void *buf, size_t len, int flags)'),
  recv: libc.func('long recv(int fd, void *buf, size_t len, int flags)'),
  recvmmsg: libc.func(
    'int recvmmsg(int fd, void *msgvec, uint32_t vlen, int flags, void *timeout)',
  ),
  setsockopt: libc.func(
    'int setsockopt(int fd, int level, int optname, void *optval, uint32_t optlen)',
  ),
  getsockopt: libc.func(
    'int getsockopt(int fd, int level, int optname, void *optval, _Inout_ uint32_t *optlen)',
  ),
  getsockname: libc.func('int getsockname(int fd, void *addr, _Inout_ uint32_t *addrlen)'),
  sendto: libc.func(
    'long sendto(int fd, void *buf, size_t len, int flags, void *addr, uint32_t addrlen)',
  ),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  close: libc.func('int close(int fd)'),
  read: libc.func('long read(int fd, void *buf, size_t count)'),
  write: libc.func('long write(int fd, void *buf, size_t count)'),
  poll: libc.func('int poll(void *fds, uint64_t nfds, int timeout)'),
  eventfd: libc.func('int eventfd(uint32_t initval, int flags)'),
  epoll_create1: libc.func('int epoll_create1(int flags)'),
  epoll_ctl: libc.func('int epoll_ctl(int epfd, int op, int fd, void *event)'),
  epoll_wait: libc.func('int epoll_wait(int epfd, void *events, int maxevents, int timeout)'),
  // glibc >= 2.36 (Debian 12) wraps both pidfd calls.
  pidfd_open: libc.func('int pidfd_open(int pid, uint32_t flags)'),
  // The siginfo_t travels by address (SignalInfo.address, a BigInt, or 0n for none): koffi
  // converts an integer for less than it takes to look up a Buffer (~100 ns of the ~300 ns a call
  // costs, koffi 3.3, Node 20), and the fast path makes one such call per registrant per fork.
  pidfd_send_signal: libc.func('pidfd_send_signal', 'int', ['int', 'int', 'intptr_t', 'uint32_t']),
  umount2: libc.func('int umount2(const char *target, int flags)'),
  mount: libc.func(
    'int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)',
  ),
  // open(2) is variadic in C: the mode travels as a variadic argument (koffi passes its type).
  open: libc.func('int open(const char *path, int flags, ...)'),
  unshare: libc.func('int unshare(int flags)'),
  gettid: libc.func('int gettid()'),
  // sighandler_t signal(int, sighandler_t): the handler is a pointer; only SIG_DFL (0) and
  // SIG_IGN (1) are ever passed, so it travels as a pointer-sized integer.
  signal: libc.func('intptr_t signal(int signum, intptr_t handler)'),
  prlimit: libc.func('int prlimit(int pid, int resource, void *newLimit, void *oldLimit)'),
  sendmsg: libc.func('sendmsg', 'long', ['int', koffi.pointer(MSGHDR_TYPE), 'int']),
  // fcntl(2) is variadic in C; only F_GETFD/F_SETFD/F_GETFL/F_SETFL/F_DUPFD with an int are used.
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)'),
};

function check(syscall: string, ret: number | bigint, path?: string): number {
  const n = Number(ret);
  if (n < 0) throw syscallError(syscall, koffi.errno(), path);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Sockets

export const AF_NETLINK = 16;
export const AF_UNIX = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_RCVBUF = 8;
export const SO_RCVBUFFORCE = 33;
export const SO_MEMINFO = 55;
/**
 * SO_RCVTIMEO as the C library's <sys/socket.h> defines it on 64-bit: SO_RCVTIMEO_OLD (20,
 * include/uapi/asm-generic/socket.h), which takes a struct timeval (TIMEVAL in structs.ts).
 */
export const SO_RCVTIMEO = 20;
export const MSG_DONTWAIT = 0x40;
export const MSG_TRUNC = 0x20;
/** recvmmsg(2): block for the first datagram only, then take what is queued (Linux 2.6.34). */
export const MSG_WAITFORONE = 0x10000;
export const MSG_NOSIGNAL = 0x4000;
/** SCM_RIGHTS (include/linux/socket.h): the cmsg_type that passes fds. */
export const SCM_RIGHTS = 1;

export function socket(domain: number, type: number, protocol: number): number {
  return check('socket', c.socket(domain, type, protocol));
}

export function bind(fd: number, addr: Buffer): void {
  check('bind', c.bind(fd, addr, addr.length));
}

/** send(2); returns the bytes sent. */
export function send(fd: number, buf: Buffer, flags = 0): number {
  return check('send', c.send(fd, buf, buf.length, flags));
}

/** sendto(2) to an explicit address (AF_UNIX datagrams, e.g. sd_notify). */
export function sendto(fd: number, buf: Buffer, addr: Buffer, flags = 0): number {
  return check('sendto', c.sendto(fd, buf, buf.length, flags, addr, addr.length));
}

/**
 * recv(2) into `buf` starting at `offset`, at most `length` bytes. Returns the datagram's length
 * (with MSG_TRUNC, its full length even if larger than the space given).
 */
export function recv(fd: number, buf: Buffer, offset: number, length: number, flags = 0): number {
  const view = offset === 0 && length === buf.length ? buf : buf.subarray(offset, offset + length);
  return check('recv', c.recv(fd, view, length, flags));
}

/**
 * recv(2) that reports "nothing to read" (EAGAIN) and "the socket overflowed" (ENOBUFS) as return
 * values rather than exceptions, because on a hot receive loop both are ordinary outcomes.
 * Returns the length received, or -EAGAIN / -ENOBUFS.
 */
export function recvOrErrno(
  fd: number,
  buf: Buffer,
  offset: number,
  length: number,
  flags: number,
): number {
  const view = buf.subarray(offset, offset + length);
  const n = Number(c.recv(fd, view, length, flags));
  if (n >= 0) return n;
  const e = koffi.errno();
  if (e === Errno.EAGAIN || e === Errno.ENOBUFS || e === Errno.EINTR) return -e;
  throw syscallError('recv', e);
}

/**
 * recv(2) into the whole of `buf`, with recvOrErrno's outcomes, for the relay's per-event loop:
 * no view is made, so nothing is allocated per call.
 */
export function recvInto(fd: number, buf: Buffer, flags: number): number {
  const n = Number(c.recv(fd, buf, buf.length, flags));
  if (n >= 0) return n;
  const e = koffi.errno();
  if (e === Errno.EAGAIN || e === Errno.ENOBUFS || e === Errno.EINTR) return -e;
  throw syscallError('recv', e);
}

/**
 * Datagram slots for recvmmsg(2): `count` slots of `slotBytes` in one ArrayBuffer, and the
 * struct mmsghdr and struct iovec vectors that point into it, built once (an ArrayBuffer's
 * backing store never moves, so the addresses hold for the object's life; the vectors hold no
 * name and no control buffer, so the kernel changes nothing in them between calls but msg_len
 * and msg_flags). `bytes` and `ints` are the slots, slot i at i * slotBytes.
 */
export class DatagramBatch {
  readonly bytes: Buffer;
  readonly ints: Int32Array;
  private readonly vector: Buffer;
  private readonly iovecs: Buffer;
  /** The vector as ints: msg_len of slot i at i * MMSGHDR_INTS + MSG_LEN_INT. */
  private readonly vector32: Int32Array;

  constructor(
    readonly count: number,
    readonly slotBytes: number,
  ) {
    if (!Number.isInteger(count) || count < 1 || slotBytes % 8 !== 0 || slotBytes < 8) {
      throw new RangeError(`DatagramBatch: bad shape ${count} x ${slotBytes}`);
    }
    this.bytes = Buffer.from(new ArrayBuffer(count * slotBytes));
    this.ints = new Int32Array(this.bytes.buffer, 0, (count * slotBytes) >> 2);
    this.iovecs = Buffer.from(new ArrayBuffer(count * IOVEC.SIZE));
    this.vector = Buffer.from(new ArrayBuffer(count * MMSGHDR.SIZE));
    this.vector32 = new Int32Array(this.vector.buffer);
    const slots = addressOf(this.bytes);
    const iovecs = addressOf(this.iovecs);
    for (let i = 0; i < count; i++) {
      const iov = i * IOVEC.SIZE;
      this.iovecs.writeBigUInt64LE(slots + BigInt(i * slotBytes), iov + IOVEC.BASE);
      this.iovecs.writeBigUInt64LE(BigInt(slotBytes), iov + IOVEC.LEN);
      const m = i * MMSGHDR.SIZE;
      this.vector.writeBigUInt64LE(iovecs + BigInt(iov), m + MMSGHDR.IOV);
      this.vector.writeBigUInt64LE(1n, m + MMSGHDR.IOVLEN);
    }
  }

  /**
   * recvmmsg(2) into the slots: the number of datagrams received (at least 1), or -EAGAIN /
   * -ENOBUFS / -EINTR as recvInto reports them. An error met after the first datagram is kept
   * by the kernel for the next call (__sys_recvmmsg, net/socket.c), so a loss is reported after
   * the datagrams queued before it.
   */
  receive(fd: number, flags: number): number {
    const n = c.recvmmsg(fd, this.vector, this.count, flags, null);
    if (n >= 0) return n;
    const e = koffi.errno();
    if (e === Errno.EAGAIN || e === Errno.ENOBUFS || e === Errno.EINTR) return -e;
    throw syscallError('recvmmsg', e);
  }

  /** The length of the datagram in slot `i` after receive() (its full length with MSG_TRUNC). */
  lengthOf(i: number): number {
    return this.vector32[i * MMSGHDR_INTS + MSG_LEN_INT];
  }
}

const MMSGHDR_INTS = MMSGHDR.SIZE >> 2;
const MSG_LEN_INT = MMSGHDR.LEN >> 2;

/** The address of a Buffer's first byte, for the pointers inside C structs built here. */
function addressOf(buf: Buffer): bigint {
  return BigInt(koffi.address(buf));
}

export function setsockoptInt(fd: number, level: number, optname: number, value: number): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value, 0);
  check('setsockopt', c.setsockopt(fd, level, optname, v, 4));
}

export function getsockoptInt(fd: number, level: number, optname: number): number {
  const v = Buffer.alloc(4);
  check('getsockopt', c.getsockopt(fd, level, optname, v, [4]));
  return v.readInt32LE(0);
}

/**
 * SO_RCVTIMEO: a blocking recv on `fd` returns EAGAIN after `ms` without a datagram (0: never).
 */
export function setReceiveTimeout(fd: number, ms: number): void {
  const tv = Buffer.alloc(TIMEVAL.SIZE);
  tv.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), TIMEVAL.SEC);
  tv.writeBigInt64LE(BigInt((ms % 1000) * 1000), TIMEVAL.USEC);
  check('setsockopt', c.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, TIMEVAL.SIZE));
}

/** getsockname(2) into `addr`; returns the address length the kernel reported. */
export function getsockname(fd: number, addr: Buffer): number {
  const len = [addr.length];
  check('getsockname', c.getsockname(fd, addr, len));
  return len[0];
}

/**
 * sendto(2) that reports a full receive queue (EAGAIN, ENOBUFS with MSG_DONTWAIT) as a return
 * value: -errno, or the bytes sent. Other errors throw.
 */
export function sendtoOrErrno(fd: number, buf: Buffer, addr: Buffer, flags: number): number {
  const n = Number(c.sendto(fd, buf, buf.length, flags, addr, addr.length));
  if (n >= 0) return n;
  const e = koffi.errno();
  if (e === Errno.EAGAIN || e === Errno.ENOBUFS || e === Errno.EINTR) return -e;
  throw syscallError('sendto', e);
}

/** getsockopt into a caller-sized buffer; returns the length the kernel filled in. */
export function getsockoptBuffer(fd: number, level: number, optname: number, out: Buffer): number {
  const len = [out.length];
  check('getsockopt', c.getsockopt(fd, level, optname, out, len));
  return len[0];
}

/**
 * sendmsg(2) of one datagram `data` to `addr` (or the connected peer when null), passing `fds`
 * as SCM_RIGHTS ancillary data: the receiver gets its own duplicates of them (sd_notify's
 * FDSTORE=1). Returns the bytes sent.
 */
export function sendWithFds(fd: number, data: Buffer, addr: Buffer | null, fds: number[]): number {
  let control: Buffer | null = null;
  if (fds.length > 0) {
    const payload = fds.length * 4;
    control = Buffer.alloc(CMSGHDR.SIZE + Math.ceil(payload / 8) * 8); // CMSG_SPACE
    control.writeBigUInt64LE(BigInt(CMSGHDR.SIZE + payload), CMSGHDR.LEN); // CMSG_LEN
    control.writeInt32LE(SOL_SOCKET, CMSGHDR.LEVEL);
    control.writeInt32LE(SCM_RIGHTS, CMSGHDR.TYPE);
    fds.forEach((f, i) => control!.writeInt32LE(f, CMSGHDR.SIZE + i * 4));
  }
  const msg = {
    name: addr,
    namelen: addr?.length ?? 0,
    iov: { base: data, len: data.length },
    iovlen: 1,
    control,
    controllen: control?.length ?? 0,
    flags: 0,
  };
  return check('sendmsg', c.sendmsg(fd, msg, MSG_NOSIGNAL));
}

export const SOCK_SEQPACKET = 5;

/** socketpair(2); returns both fds. */
export function socketpair(domain: number, type: number, protocol: number): [number, number] {
  const sv = [0, 0];
  check('socketpair', c.socketpair(domain, type, protocol, sv));
  return [sv[0], sv[1]];
}

export function close(fd: number): void {
  check('close', c.close(fd));
}

const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const F_DUPFD_CLOEXEC = 1030;

/** dup(2) with FD_CLOEXEC: a second fd for the same open file description. */
export function duplicateFd(fd: number): number {
  return check('fcntl', c.fcntl(fd, F_DUPFD_CLOEXEC, 'int', 3));
}

/** Set FD_CLOEXEC on an inherited fd (sd_listen_fds does the same), so children never get it. */
export function setCloseOnExec(fd: number): void {
  const flags = check('fcntl', c.fcntl(fd, F_GETFD, 'int', 0));
  check('fcntl', c.fcntl(fd, F_SETFD, 'int', flags | FD_CLOEXEC));
}

const F_GETFL = 3;
const F_SETFL = 4;
export const O_NONBLOCK = 0o4000;

/** Set O_NONBLOCK on the open file description of `fd` (shared with every dup of it). */
export function setNonBlocking(fd: number): void {
  const flags = check('fcntl', c.fcntl(fd, F_GETFL, 'int', 0));
  if ((flags & O_NONBLOCK) === 0) check('fcntl', c.fcntl(fd, F_SETFL, 'int', flags | O_NONBLOCK));
}

/** True when `fd` has O_NONBLOCK set. */
export function isNonBlocking(fd: number): boolean {
  return (check('fcntl', c.fcntl(fd, F_GETFL, 'int', 0)) & O_NONBLOCK) !== 0;
}

/** True when `fd` has FD_CLOEXEC set. */
export function isCloseOnExec(fd: number): boolean {
  return (check('fcntl', c.fcntl(fd, F_GETFD, 'int', 0)) & FD_CLOEXEC) !== 0;
}

// ---------------------------------------------------------------------------------------------
// Plain fds: read/write/poll/eventfd (used to wake a worker blocked in poll)

export const POLLIN = 0x1;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

export function read(fd: number, buf: Buffer): number {
  return check('read', c.read(fd, buf, buf.length));
}

export function write(fd: number, buf: Buffer): number {
  return check('write', c.write(fd, buf, buf.length));
}

/**
 * read(2) for a loop that expects some failures as outcomes: returns the count, or -errno for
 * EINTR, EAGAIN, ENOENT, ENODEV and ECONNABORTED (on /dev/fuse: interrupted, nothing yet, a
 * request that went away before it could be read, the connection ended, the connection was
 * aborted with FUSE_ABORT_ERROR negotiated: fs/fuse/dev.c fuse_dev_do_read); throws for anything
 * else.
 */
export function readOrErrno(fd: number, buf: Buffer): number {
  const n = Number(c.read(fd, buf, buf.length));
  if (n >= 0) return n;
  const e = koffi.errno();
  if (
    e === Errno.EINTR ||
    e === Errno.EAGAIN ||
    e === Errno.ENOENT ||
    e === Errno.ENODEV ||
    e === Errno.ECONNABORTED
  ) {
    return -e;
  }
  throw syscallError('read', e);
}

/**
 * write(2) of the whole buffer in one call, returning the count or -errno instead of throwing:
 * on /dev/fuse, ENOENT (the request was interrupted or aborted meanwhile) and ENODEV (the
 * connection ended) are ordinary outcomes for a reply.
 */
export function writeOrErrno(fd: number, buf: Buffer): number {
  const n = Number(c.write(fd, buf, buf.length));
  return n >= 0 ? n : -koffi.errno();
}

export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;

/** open(2); returns the fd. */
export function open(path: string, flags: number, mode = 0): number {
  return check('open', c.open(path, flags, 'uint32_t', mode), path);
}

/**
 * poll(2) on a caller-built `struct pollfd` array (8 bytes each: int fd, short events,
 * short revents). Returns the number of ready fds; EINTR is returned as 0 (a spurious wake-up).
 */
export function poll(fds: Buffer, timeoutMs: number): number {
  const n = c.poll(fds, fds.length / 8, timeoutMs);
  if (n < 0) {
    const e = koffi.errno();
    if (e === Errno.EINTR) return 0;
    throw syscallError('poll', e);
  }
  return n;
}

export function eventfd(initval: number, flags: number): number {
  return check('eventfd', c.eventfd(initval, flags));
}

// ---------------------------------------------------------------------------------------------
// epoll (include/uapi/linux/eventpoll.h); the struct epoll_event layout is in ./structs.

export const EPOLL_CLOEXEC = 0o2000000;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLLIN = 0x1;
export const EPOLLHUP = 0x10;

export function epollCreate1(flags: number): number {
  return check('epoll_create1', c.epoll_create1(flags));
}

/**
 * epoll_ctl(2) with a caller-built struct epoll_event (null for EPOLL_CTL_DEL). Returns 0 or the
 * positive errno: the worker's loop treats ENOENT/EBADF on a delete as an outcome, not a failure.
 */
export function epollCtl(epfd: number, op: number, fd: number, event: Buffer | null): number {
  const r = c.epoll_ctl(epfd, op, fd, event);
  return r < 0 ? koffi.errno() : 0;
}

/**
 * epoll_wait(2) into a caller-built array of struct epoll_event; returns the number filled in.
 * EINTR is returned as 0 (a spurious wake-up).
 */
export function epollWait(
  epfd: number,
  events: Buffer,
  maxEvents: number,
  timeoutMs: number,
): number {
  const n = c.epoll_wait(epfd, events, maxEvents, timeoutMs);
  if (n < 0) {
    const e = koffi.errno();
    if (e === Errno.EINTR) return 0;
    throw syscallError('epoll_wait', e);
  }
  return n;
}

/**
 * epoll_wait(2) on a libuv pool thread (koffi's asynchronous call), so that the main thread can
 * wait for fds without a thread of its own. `done` runs on the main thread, Node-style, with the
 * number of events (EINTR, a signal that landed on the pool thread, is 0) or the error; koffi
 * restores the pool thread's errno before it calls back (koffi 3.3 AsyncCall::Complete). When
 * koffi cannot even start the call, `done` runs before this returns. `events` is written in place
 * by the pool thread: the caller must not touch it, or free it, before `done`.
 */
export function epollWaitAsync(
  epfd: number,
  events: Buffer,
  maxEvents: number,
  timeoutMs: number,
  done: (err: Error | null, ready: number) => void,
): void {
  const complete = (err: unknown, n: number): void => {
    if (err !== null && err !== undefined) return done(asError(err), 0);
    if (n >= 0) return done(null, n);
    const e = koffi.errno();
    if (e === Errno.EINTR) return done(null, 0);
    done(syscallError('epoll_wait', e), 0);
  };
  try {
    c.epoll_wait.async(epfd, events, maxEvents, timeoutMs, complete);
  } catch (err) {
    done(asError(err), 0); // koffi refused the call ("Too many asynchronous calls")
  }
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

// ---------------------------------------------------------------------------------------------
// Process handles and signals

/** pidfd_open flag (Linux 6.9): the pidfd names the thread `pid` rather than its thread group. */
export const PIDFD_THREAD = 0o200; // O_EXCL

export function pidfdOpen(pid: number, flags: number): number {
  return check('pidfd_open', c.pidfd_open(pid, flags));
}

/**
 * A siginfo_t for pidfdSendSignal, alive as long as this object: `bytes` and `ints` are its 128
 * bytes (SIGINFO in structs.ts), passed to the kernel by address.
 */
export class SignalInfo {
  readonly bytes = Buffer.from(new ArrayBuffer(SIGINFO.SIZE));
  readonly ints = new Int32Array(this.bytes.buffer);
  /**
   * The address of `bytes` (a backing store never moves), as a BigInt, which koffi takes for an
   * intptr_t as it is. As a Number (a user address is above 2^31, so never a small integer) V8
   * keeps it in an unboxed double field and boxes it anew for every call that passes it: in the
   * receive worker's optimised fork loop that was a 16-byte HeapNumber per send, a scavenge
   * (1-2 ms, the worker stopped) about every 10,000 forks with 10 registrants (--trace-gc,
   * Node 20). Koffi's BigInt conversion costs ~30 ns more per call; it allocates nothing.
   */
  readonly address = addressOf(this.bytes);
}

/** The null siginfo_t pointer, of the same type as SignalInfo.address. */
const NULL_ADDRESS = 0n;

/**
 * pidfd_send_signal(2), with `info` or no siginfo_t (null). Returns 0 on success or the positive
 * errno on failure (ESRCH, EAGAIN, EPERM...), because the relay treats each failure as an
 * outcome to count, never as an exception on its hot path.
 */
export function pidfdSendSignal(pidfd: number, sig: number, info: SignalInfo | null): number {
  const r = c.pidfd_send_signal(pidfd, sig, info === null ? NULL_ADDRESS : info.address, 0);
  return r < 0 ? koffi.errno() : 0;
}

export function gettid(): number {
  return c.gettid();
}

/** SIG_IGN ((sighandler_t) 1, include/uapi/asm-generic/signal-defs.h). */
const SIG_IGN = 1;
/** SIG_ERR ((sighandler_t) -1). */
const SIG_ERR = -1;
export const SIGUSR1 = 10;

/**
 * Make the process ignore `signo` (signal(2) with SIG_IGN). Process-wide: every thread, and
 * whatever handler Node installed before (its inspector's SIGUSR1 handler among them) is gone.
 * An ignored signal stays ignored across execve(2) in children.
 */
export function ignoreSignal(signo: number): void {
  const previous = Number(c.signal(signo, SIG_IGN));
  if (previous === SIG_ERR) throw syscallError('signal', koffi.errno());
}

// ---------------------------------------------------------------------------------------------
// Resource limits

/** RLIMIT_NOFILE (include/uapi/asm-generic/resource.h). */
export const RLIMIT_NOFILE = 7;
/** struct rlimit { __kernel_ulong_t rlim_cur, rlim_max; } (include/uapi/linux/resource.h). */
const RLIMIT_SIZE = 16;
const RLIMIT_CUR = 0;
const RLIMIT_MAX = 8;
/** RLIM_INFINITY, read as a number (2^64 - 1 does not fit a double exactly; Infinity does). */
const RLIM_INFINITY = 0xffffffffffffffffn;

export interface ResourceLimit {
  soft: number;
  hard: number;
}

function decodeLimit(value: bigint): number {
  return value === RLIM_INFINITY ? Number.POSITIVE_INFINITY : Number(value);
}

function encodeLimit(value: number): bigint {
  return value === Number.POSITIVE_INFINITY ? RLIM_INFINITY : BigInt(value);
}

/** prlimit(2) on this process: read a limit. */
export function getResourceLimit(resource: number): ResourceLimit {
  const old = Buffer.alloc(RLIMIT_SIZE);
  check('prlimit', c.prlimit(0, resource, null, old));
  return {
    soft: decodeLimit(old.readBigUInt64LE(RLIMIT_CUR)),
    hard: decodeLimit(old.readBigUInt64LE(RLIMIT_MAX)),
  };
}

/** prlimit(2) on this process: set a limit (raising the hard one needs CAP_SYS_RESOURCE). */
export function setResourceLimit(resource: number, limit: ResourceLimit): void {
  const next = Buffer.alloc(RLIMIT_SIZE);
  next.writeBigUInt64LE(encodeLimit(limit.soft), RLIMIT_CUR);
  next.writeBigUInt64LE(encodeLimit(limit.hard), RLIMIT_MAX);
  check('prlimit', c.prlimit(0, resource, next, null));
}

// ---------------------------------------------------------------------------------------------
// Mounts and namespaces

export const MNT_FORCE = 1;
export const MNT_DETACH = 2;
export const CLONE_NEWPID = 0x20000000;

export function umount2(target: string, flags: number): void {
  check('umount2', c.umount2(target, flags), target);
}

export const MS_NOSUID = 2;
export const MS_NODEV = 4;

/** mount(2). `data` is the filesystem's option string (for FUSE: fd=N,rootmode=...). */
export function mount(
  source: string,
  target: string,
  fstype: string,
  flags: number,
  data: string,
): void {
  check('mount', c.mount(source, target, fstype, flags, data), target);
}

export function unshare(flags: number): void {
  check('unshare', c.unshare(flags));
}
