/**
 * The proc connector socket: open, bind, subscribe, read the drop counter, close. Plain functions
 * on a file descriptor, so the same fd can be used from the main thread (requests) and the receive
 * worker (reads).
 */
import {
  AF_NETLINK,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOL_SOCKET,
  SO_MEMINFO,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  bind,
  close,
  getsockoptBuffer,
  getsockname,
  getsockoptInt,
  isSyscallError,
  MSG_DONTWAIT,
  send,
  sendtoOrErrno,
  setsockoptInt,
  socket,
} from '../native/libc';
import { SOCKADDR_NL } from '../native/structs';
import {
  CN_IDX_PROC,
  NETLINK_CONNECTOR,
  NLMSGHDR,
  NLMSG_NOOP,
  buildMcastRequest,
  buildSockaddrNl,
  type McastRequest,
} from './cnProcStructs';

/**
 * SO_MEMINFO fills `__u32 meminfo[SK_MEMINFO_VARS]` (include/uapi/linux/sock_diag.h); index
 * SK_MEMINFO_DROPS is sk->sk_drops, which netlink_overrun() increments once per message it could
 * not queue (net/netlink/af_netlink.c): the exact number of events this socket lost.
 */
export const SK_MEMINFO_DROPS = 8;
/** SK_MEMINFO_VARS is 9 on Linux 6.x; room for more in case later kernels add fields. */
const SK_MEMINFO_BYTES = 16 * 4;

export interface OpenedSocket {
  fd: number;
  /** sk_rcvbuf as the kernel reports it (twice the requested value, see socket(7)). */
  receiveBufferBytes: number;
  /** True when SO_RCVBUFFORCE was refused and SO_RCVBUF (capped by net.core.rmem_max) was used. */
  receiveBufferCapped: boolean;
}

/**
 * socket(AF_NETLINK, SOCK_DGRAM|SOCK_CLOEXEC, NETLINK_CONNECTOR), raise the receive buffer, bind
 * to the CN_IDX_PROC multicast group. Closes the fd again if any step fails.
 */
export function openProcConnectorSocket(receiveBufferBytes: number): OpenedSocket {
  const fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
  try {
    let capped = false;
    try {
      // SO_RCVBUFFORCE ignores net.core.rmem_max but needs CAP_NET_ADMIN.
      setsockoptInt(fd, SOL_SOCKET, SO_RCVBUFFORCE, receiveBufferBytes);
    } catch (err) {
      if (!isSyscallError(err, 'EPERM')) throw err;
      setsockoptInt(fd, SOL_SOCKET, SO_RCVBUF, receiveBufferBytes);
      capped = true;
    }
    bind(fd, buildSockaddrNl(CN_IDX_PROC));
    return {
      fd,
      receiveBufferBytes: getsockoptInt(fd, SOL_SOCKET, SO_RCVBUF),
      receiveBufferCapped: capped,
    };
  } catch (err) {
    close(fd);
    throw err;
  }
}

/** Send a PROC_CN_MCAST_LISTEN/IGNORE request to the kernel (port id 0). */
export function sendMcastRequest(fd: number, request: McastRequest): void {
  send(fd, buildMcastRequest(request));
}

/**
 * Wake a thread blocked in recv(2) on `fd`: send the socket a datagram of its own, one bare
 * nlmsghdr of type NLMSG_NOOP ("ignored", netlink(7); the parser skips it), to its own port id.
 * A netlink socket cannot be shut down (sock_no_shutdown) and closing it under a blocked reader
 * does not wake the reader, so this is the way to end the receive worker's blocking read.
 * Unicast between user sockets needs CAP_NET_ADMIN (netlink_sendmsg, net/netlink/af_netlink.c,
 * Linux 6.x; NETLINK_CONNECTOR does not set NL_CFG_F_NONROOT_SEND), which the daemon has, though
 * a library user on Linux >= 6.6 may subscribe without it. Returns false if the datagram could
 * not be queued (a full queue: then the reader is not blocked either) or was refused (EPERM);
 * the reader's SO_RCVTIMEO (a second) bounds its wait then.
 */
export function wakeReader(fd: number): boolean {
  const self = Buffer.alloc(SOCKADDR_NL.SIZE);
  try {
    getsockname(fd, self);
    const portId = self.readUInt32LE(SOCKADDR_NL.PID);
    const message = Buffer.alloc(NLMSGHDR.SIZE);
    message.writeUInt32LE(NLMSGHDR.SIZE, NLMSGHDR.LEN);
    message.writeUInt16LE(NLMSG_NOOP, NLMSGHDR.TYPE);
    message.writeUInt32LE(portId, NLMSGHDR.PID);
    const to = buildSockaddrNl(0, portId);
    return sendtoOrErrno(fd, message, to, MSG_DONTWAIT) === NLMSGHDR.SIZE;
  } catch (err) {
    if (isSyscallError(err)) return false;
    throw err;
  }
}

/** The socket's cumulative drop counter (SO_MEMINFO[SK_MEMINFO_DROPS]). */
export function readSocketDrops(
  fd: number,
  scratch: Buffer = Buffer.alloc(SK_MEMINFO_BYTES),
): number {
  const len = getsockoptBuffer(fd, SOL_SOCKET, SO_MEMINFO, scratch);
  if (len < (SK_MEMINFO_DROPS + 1) * 4) return 0;
  return scratch.readUInt32LE(SK_MEMINFO_DROPS * 4);
}

export function closeSocket(fd: number): void {
  close(fd);
}

export { SK_MEMINFO_BYTES };
