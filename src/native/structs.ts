/**
 * C layouts passed to the system calls of src/native/libc.ts, defined once. Offsets are for the
 * 64-bit little-endian Linux ABIs Node runs on (x86_64, aarch64); each cites its header.
 */

/** struct pollfd (include/uapi/asm-generic/poll.h): int fd; short events; short revents. */
export const POLLFD = {
  SIZE: 8,
  FD: 0,
  EVENTS: 4,
  REVENTS: 6,
} as const;

/** struct timeval (include/uapi/linux/time.h on LP64): long tv_sec; long tv_usec. */
export const TIMEVAL = {
  SIZE: 16,
  SEC: 0,
  USEC: 8,
} as const;

/**
 * struct epoll_event (include/uapi/linux/eventpoll.h): __poll_t events; __u64 data. x86_64
 * declares it __attribute__((packed)) (EPOLL_PACKED), so it is 12 bytes with data at 4; other
 * architectures align data to 8 (16 bytes). `data` is written and read as two u32 halves here:
 * relayfork stores a small tag in the low half.
 */
export const EPOLL_EVENT =
  process.arch === 'x64'
    ? ({ SIZE: 12, EVENTS: 0, DATA: 4 } as const)
    : ({ SIZE: 16, EVENTS: 0, DATA: 8 } as const);

/**
 * siginfo_t on x86_64 and aarch64 (include/uapi/asm-generic/siginfo.h, Linux 6.x; no
 * __ARCH_HAS_SWAPPED_SIGINFO there): three ints, then `union __sifields`, 8-byte aligned because
 * it holds pointers, so it starts at 16; the whole struct is padded to SI_MAX_SIZE. For
 * SI_ASYNCIO the kernel and the receiver read the `_rt` member: _pid, _uid, then the sigval_t
 * (union of int and pointer, so 8-aligned at 24). Checked against `offsetof` with the system's
 * glibc headers.
 */
export const SIGINFO = {
  SIZE: 128, // SI_MAX_SIZE
  SIGNO: 0,
  ERRNO: 4,
  CODE: 8,
  PID: 16, // _sifields._rt._pid
  UID: 20, // _sifields._rt._uid
  VALUE: 24, // _sifields._rt._sigval.sival_int
} as const;

/**
 * SI_ASYNCIO (include/uapi/asm-generic/siginfo.h): "sent by AIO completion", the code the patch
 * used. Being negative, pidfd_send_signal lets a sender other than the target set it (it refuses
 * si_code >= 0 and SI_TKILL, kernel/signal.c).
 */
export const SI_ASYNCIO = -4;

/** struct iovec (include/uapi/linux/uio.h, LP64): void *iov_base; __kernel_size_t iov_len. */
export const IOVEC = {
  SIZE: 16,
  BASE: 0,
  LEN: 8,
} as const;

/**
 * struct mmsghdr (include/linux/socket.h, LP64), recvmmsg(2)'s vector: a struct user_msghdr of 56
 * bytes (msg_name, msg_namelen, msg_iov, msg_iovlen, msg_control, msg_controllen, msg_flags,
 * pointers and size_t 8-aligned), then unsigned int msg_len, padded to 64. Checked against
 * `offsetof` with the system's glibc headers.
 */
export const MMSGHDR = {
  SIZE: 64,
  NAME: 0,
  NAMELEN: 8,
  IOV: 16,
  IOVLEN: 24,
  CONTROL: 32,
  CONTROLLEN: 40,
  FLAGS: 48,
  /** What recvmsg returned for this message: with MSG_TRUNC, the datagram's full length. */
  LEN: 56,
} as const;

/** struct sockaddr_un (include/uapi/linux/un.h): sa_family_t sun_family; char sun_path[108]. */
export const SOCKADDR_UN = {
  FAMILY: 0,
  PATH: 2,
  PATH_SIZE: 108,
} as const;

/**
 * struct cmsghdr (include/linux/socket.h, LP64): size_t cmsg_len; int cmsg_level; int cmsg_type;
 * then the data, at CMSG_DATA = 16 (the header is already 8-aligned).
 */
export const CMSGHDR = {
  SIZE: 16,
  LEN: 0,
  LEVEL: 8,
  TYPE: 12,
} as const;

/** struct sockaddr_nl (include/uapi/linux/netlink.h). */
export const SOCKADDR_NL = {
  SIZE: 12,
  /** __kernel_sa_family_t nl_family (AF_NETLINK) */
  FAMILY: 0,
  /** unsigned short nl_pad */
  PAD: 2,
  /** __u32 nl_pid: 0 lets the kernel assign the port id. */
  PID: 4,
  /** __u32 nl_groups: multicast group mask; the proc connector multicasts to CN_IDX_PROC. */
  GROUPS: 8,
} as const;
