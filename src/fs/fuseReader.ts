/**
 * The FUSE request reader: takes requests off each session's /dev/fuse fd and hands them, one at
 * a time and in kernel order, to the session on the main thread.
 *
 * No thread of our own: the fds of every session in the process sit in one epoll set, and one
 * epoll_wait(2) at a time waits for all of them on a libuv pool thread (an asynchronous libc
 * call, ../native/libc epollWaitAsync). When it returns, the main thread reads the ready fds,
 * which are O_NONBLOCK, until EAGAIN. A Node worker thread costs a whole V8 isolate to wait for
 * requests that come a few times a second: the daemon's idle RSS fell 7-9 MB on Node 20 (75 to
 * 66-68 MB), 11 MB on Node 22 and 13 MB on Node 24 without it (issue 7's 70 MB goal). One wait
 * for all sessions, not one per session, because a wait holds a pool thread for as long as it
 * lasts and the pool (UV_THREADPOOL_SIZE, 4 by default) also serves `fs`: the FUSE server needs
 * at least 2 pool threads, and its requests wait behind any pool work queued before the wait.
 *
 * The main thread never blocks in read(2): a request can vanish between the wake-up and the read
 * (interrupted before userspace took it, fs/fuse/dev.c request_wait_answer), and the read then
 * says EAGAIN instead of waiting for the next one. O_NONBLOCK is a flag of the open file
 * description, shared with the copy in systemd's fd store and with a successor that adopts it;
 * a successor sets it again, and a blocking reader would only ever see EAGAIN after a poll.
 *
 * Stopping is immediate and exact: reads happen on the main thread and each request is handled
 * before the next read, so once stop() returns no request has been read and left unanswered, and
 * the rest wait in the kernel for whoever holds the connection next (a hand-over).
 *
 * The end: read(2) fails ENODEV once the connection is aborted (fuse_abort_conn when the mount's
 * superblock goes, or through fusectl; the device then polls EPOLLERR, fs/fuse/dev.c
 * fuse_dev_poll). ECONNABORTED replaces ENODEV after a fusectl abort only for a server that
 * negotiated FUSE_ABORT_ERROR, which relayfork does not (Linux 6.18 says ENODEV); it is an end
 * too. 0 never comes from /dev/fuse: it is the end of a socket standing in for it (the tests).
 */
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EPOLLIN,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  Errno,
  close,
  epollCreate1,
  epollCtl,
  epollWait,
  epollWaitAsync,
  eventfd,
  readOrErrno,
  setNonBlocking,
  syscallError,
  write,
} from '../native/libc';
import { EPOLL_EVENT } from '../native/structs';

/** What the reader tells its session. Each is called on the main thread. */
export interface FuseReaderHandlers {
  /** One request, in a buffer of its own. */
  request(buf: Buffer): void;
  /** The connection ended (ENODEV, or EOF on a stand-in); the reader has stopped. */
  ended(): void;
  /** read(2) or the wait failed in a way that is no outcome; the reader has stopped. */
  failed(err: Error): void;
}

/** Requests read per wake-up before the event loop gets a turn (the wait returns at once again). */
const READS_PER_WAKE = 64;
/** With no referenced reader left, unreferenced ones are polled this often (see DevicePoller). */
const UNREFERENCED_POLL_MS = 100;
const MAX_EVENTS = 16;

export class FuseReader {
  private active = true;
  private referenced = true;
  private readonly buf: Buffer;

  constructor(
    readonly fd: number,
    bufferBytes: number,
    private readonly handlers: FuseReaderHandlers,
  ) {
    this.buf = Buffer.alloc(bufferBytes);
    setNonBlocking(fd);
    poller.add(this);
  }

  get isReferenced(): boolean {
    return this.referenced;
  }

  /** Take no more requests. Idempotent; the fd stays open (the session owns it). */
  stop(): void {
    if (!this.active) return;
    this.active = false;
    poller.remove(this);
  }

  /** Let the process exit while this reader still serves (a detached mount). */
  unref(): void {
    if (!this.referenced) return;
    this.referenced = false;
    poller.referencesChanged();
  }

  /** Stop, and tell the session why (the poller's own failure). */
  fail(err: Error): void {
    if (!this.active) return;
    this.stop();
    this.handlers.failed(err);
  }

  /** The fd polled readable (or in error): read until EAGAIN, a bounded number of requests. */
  onReadable(): void {
    for (let i = 0; i < READS_PER_WAKE && this.active; i++) {
      let n: number;
      try {
        n = readOrErrno(this.fd, this.buf);
      } catch (err) {
        return this.fail(err as Error);
      }
      if (n > 0) {
        // A copy: the handler may keep the body, and the next read reuses the buffer.
        this.handlers.request(Buffer.from(this.buf.subarray(0, n)));
        continue;
      }
      if (n === -Errno.EAGAIN) return;
      if (n === 0 || n === -Errno.ENODEV || n === -Errno.ECONNABORTED) {
        this.stop();
        this.handlers.ended();
        return;
      }
      // EINTR: a signal; ENOENT: the request went away before it could be read. Read again.
    }
  }
}

/**
 * The process's one epoll set of FUSE fds and its one outstanding wait.
 *
 * While any reader is referenced, an epoll_wait with no timeout is out on the pool; it keeps the
 * process alive as a referenced worker thread did. When only unreferenced readers are left, the
 * wait is woken (an eventfd in the set) and not renewed: an unreferenced timer polls the set
 * instead, so a detached mount is still served (within 100 ms) and the process may exit. With no
 * reader left the set is closed.
 *
 * At process exit the wait is woken: Node joins the pool threads as it exits (uv_library_shutdown),
 * and one blocked in epoll_wait would hang process.exit() and every uncaught exception forever.
 */
class DevicePoller {
  private epfd = -1;
  private wakeFd = -1;
  private readonly readers = new Map<number, FuseReader>();
  private waiting = false;
  private timer: NodeJS.Timeout | undefined;
  private exiting = false;
  private readonly events = Buffer.alloc(MAX_EVENTS * EPOLL_EVENT.SIZE);
  private readonly onExit = (): void => {
    this.exiting = true;
    if (this.waiting) this.wake();
  };

  add(reader: FuseReader): void {
    if (this.epfd < 0) this.open();
    this.watch(reader.fd);
    this.readers.set(reader.fd, reader);
    this.referencesChanged();
  }

  /**
   * Before the fd is closed: a closed fd whose open file description lives on elsewhere (a dup,
   * systemd's fd store) would stay in the set and keep reporting events.
   */
  remove(reader: FuseReader): void {
    if (this.readers.get(reader.fd) !== reader) return;
    this.readers.delete(reader.fd);
    epollCtl(this.epfd, EPOLL_CTL_DEL, reader.fd, null);
    this.referencesChanged();
  }

  /** Wait on the pool, poll on a timer, or close, as the readers now need. */
  referencesChanged(): void {
    if (this.exiting) return;
    const referenced = [...this.readers.values()].some((r) => r.isReferenced);
    if (referenced) {
      this.stopTimer();
      if (!this.waiting) this.wait();
      return;
    }
    if (this.waiting) {
      // The completion calls back here once the wait has returned.
      this.wake();
      return;
    }
    if (this.readers.size > 0) this.startTimer();
    else this.close();
  }

  private open(): void {
    this.epfd = epollCreate1(EPOLL_CLOEXEC);
    this.wakeFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    this.watch(this.wakeFd);
    process.on('exit', this.onExit);
  }

  /** Add `fd` to the set, readable, its number as the event's data. */
  private watch(fd: number): void {
    const ev = Buffer.alloc(EPOLL_EVENT.SIZE);
    ev.writeUInt32LE(EPOLLIN, EPOLL_EVENT.EVENTS);
    ev.writeUInt32LE(fd, EPOLL_EVENT.DATA);
    const e = epollCtl(this.epfd, EPOLL_CTL_ADD, fd, ev);
    if (e !== 0) throw syscallError('epoll_ctl', e);
  }

  private close(): void {
    this.stopTimer();
    if (this.epfd < 0) return;
    process.off('exit', this.onExit);
    for (const fd of [this.epfd, this.wakeFd]) {
      try {
        close(fd);
      } catch {
        // Nothing left to release.
      }
    }
    this.epfd = -1;
    this.wakeFd = -1;
  }

  private wait(): void {
    this.waiting = true;
    epollWaitAsync(this.epfd, this.events, MAX_EVENTS, -1, (err, ready) => {
      this.waiting = false;
      // Not retried: a wait that fails once would fail again, and koffi may call back at once.
      if (err !== null) return this.failAll(err);
      try {
        this.dispatch(ready);
      } finally {
        this.referencesChanged();
      }
    });
  }

  private wake(): void {
    const one = Buffer.alloc(8);
    one.writeBigUInt64LE(1n);
    write(this.wakeFd, one);
  }

  private startTimer(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => {
      try {
        this.dispatch(epollWait(this.epfd, this.events, MAX_EVENTS, 0));
      } catch (err) {
        this.failAll(err as Error);
      }
    }, UNREFERENCED_POLL_MS);
    this.timer.unref();
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private dispatch(ready: number): void {
    // Copied out first: a handler that adds or removes a reader may start the next wait, which
    // fills `events` on the pool thread.
    const fds: number[] = [];
    for (let i = 0; i < ready; i++) {
      fds.push(this.events.readUInt32LE(i * EPOLL_EVENT.SIZE + EPOLL_EVENT.DATA));
    }
    for (const fd of fds) {
      if (fd === this.wakeFd) {
        readOrErrno(this.wakeFd, Buffer.alloc(8)); // reset the counter; EAGAIN if already 0
        continue;
      }
      // Undefined: removed by a handler earlier in this batch.
      this.readers.get(fd)?.onReadable();
    }
  }

  /** The set itself failed: every reader stops and says why. */
  private failAll(err: Error): void {
    for (const reader of [...this.readers.values()]) reader.fail(err);
  }
}

const poller = new DevicePoller();
