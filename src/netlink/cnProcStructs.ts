/**
 * The proc connector's wire format: named offsets and sizes of the kernel structs, the request
 * builders and the datagram parser.
 *
 * Layouts (Linux 6.x, little-endian hosts; all fields native-endian):
 *   include/uapi/linux/netlink.h    struct nlmsghdr
 *   include/uapi/linux/connector.h  struct cb_id, struct cn_msg, CN_IDX_PROC, CN_VAL_PROC
 *   include/uapi/linux/cn_proc.h    enum proc_cn_mcast_op, enum proc_cn_event, struct proc_input,
 *                                   struct proc_event
 * Debian 12's headers predate struct proc_input and PROC_EVENT_NONZERO_EXIT (Linux 6.6), so
 * everything is defined here rather than taken from a header.
 *
 * The parser never throws on short or garbage input: it counts what it cannot read and goes on.
 */
import { SOCKADDR_NL } from '../native/structs';
import type { ProcEvent, ProcEventKind } from './events';

// ---------------------------------------------------------------------------------------------
// struct nlmsghdr (include/uapi/linux/netlink.h)

export const NLMSGHDR = {
  SIZE: 16,
  /** __u32 nlmsg_len: length of the message including this header. */
  LEN: 0,
  /** __u16 nlmsg_type */
  TYPE: 4,
  /** __u16 nlmsg_flags */
  FLAGS: 6,
  /** __u32 nlmsg_seq */
  SEQ: 8,
  /** __u32 nlmsg_pid: the sender's port id (0 = the kernel). */
  PID: 12,
} as const;

/** NLMSG_ALIGNTO: every netlink message starts on a 4-byte boundary. */
export const NLMSG_ALIGNTO = 4;
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
/** The connector sends each message as a single NLMSG_DONE (drivers/connector/connector.c). */
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

export function nlmsgAlign(len: number): number {
  return (len + NLMSG_ALIGNTO - 1) & ~(NLMSG_ALIGNTO - 1);
}

/** Netlink protocol number of the connector (include/uapi/linux/netlink.h). */
export const NETLINK_CONNECTOR = 11;

/** struct sockaddr_nl: defined once in src/native/structs.ts beside the bind() that takes it. */
export { SOCKADDR_NL };

// ---------------------------------------------------------------------------------------------
// struct cn_msg (include/uapi/linux/connector.h)

export const CN_MSG = {
  SIZE: 20,
  /** struct cb_id { __u32 idx; __u32 val; } id */
  IDX: 0,
  VAL: 4,
  /** __u32 seq: for proc events, a per-CPU counter (drivers/connector/cn_proc.c send_msg()). */
  SEQ: 8,
  /** __u32 ack: for an ACK, the requester's ack + 1 (cn_proc_ack()). */
  ACK: 12,
  /** __u16 len: length of the payload that follows. */
  LEN: 16,
  /** __u16 flags */
  FLAGS: 18,
  /** __u8 data[] */
  DATA: 20,
} as const;

export const CN_IDX_PROC = 1;
export const CN_VAL_PROC = 1;

// ---------------------------------------------------------------------------------------------
// enum proc_cn_mcast_op and struct proc_input (include/uapi/linux/cn_proc.h)

export const PROC_CN_MCAST_LISTEN = 1;
export const PROC_CN_MCAST_IGNORE = 2;

/**
 * struct proc_input { enum proc_cn_mcast_op mcast_op; enum proc_cn_event event_type; } (Linux
 * >= 6.6). Older kernels accept only the bare 4-byte mcast_op and silently ignore this 8-byte
 * form (cn_proc_mcast_ctl() returns before subscribing or acknowledging).
 */
export const PROC_INPUT = {
  SIZE: 8,
  MCAST_OP: 0,
  EVENT_TYPE: 4,
} as const;

/** The legacy request payload: a bare enum proc_cn_mcast_op. */
export const PROC_CN_MCAST_OP_SIZE = 4;

// ---------------------------------------------------------------------------------------------
// enum proc_cn_event: proc_event.what, and the bits of proc_input.event_type

export const PROC_EVENT_NONE = 0x00000000;
export const PROC_EVENT_FORK = 0x00000001;
export const PROC_EVENT_EXEC = 0x00000002;
export const PROC_EVENT_UID = 0x00000004;
export const PROC_EVENT_GID = 0x00000040;
export const PROC_EVENT_SID = 0x00000080;
export const PROC_EVENT_PTRACE = 0x00000100;
export const PROC_EVENT_COMM = 0x00000200;
/** Filter bit only (Linux 6.6): deliver exits with a non-zero exit_code. Never a `what`. */
export const PROC_EVENT_NONZERO_EXIT = 0x20000000;
export const PROC_EVENT_COREDUMP = 0x40000000;
export const PROC_EVENT_EXIT = 0x80000000;
/** PROC_EVENT_ALL (cn_proc.h): every kind plus NONZERO_EXIT. */
export const PROC_EVENT_ALL =
  (PROC_EVENT_FORK |
    PROC_EVENT_EXEC |
    PROC_EVENT_UID |
    PROC_EVENT_GID |
    PROC_EVENT_SID |
    PROC_EVENT_PTRACE |
    PROC_EVENT_COMM |
    PROC_EVENT_NONZERO_EXIT |
    PROC_EVENT_COREDUMP |
    PROC_EVENT_EXIT) >>>
  0;

/** The enum proc_cn_event bit of each kind. */
export const PROC_EVENT_BIT: Readonly<Record<ProcEventKind, number>> = {
  fork: PROC_EVENT_FORK,
  exec: PROC_EVENT_EXEC,
  uid: PROC_EVENT_UID,
  gid: PROC_EVENT_GID,
  sid: PROC_EVENT_SID,
  ptrace: PROC_EVENT_PTRACE,
  comm: PROC_EVENT_COMM,
  coredump: PROC_EVENT_COREDUMP,
  exit: PROC_EVENT_EXIT >>> 0,
};

/** The proc_input.event_type mask for a set of kinds (unsigned 32-bit). */
export function eventTypeMask(kinds: Iterable<ProcEventKind>): number {
  let mask = 0;
  for (const kind of kinds) mask |= PROC_EVENT_BIT[kind];
  return mask >>> 0;
}

// ---------------------------------------------------------------------------------------------
// struct proc_event (include/uapi/linux/cn_proc.h)

export const PROC_EVENT = {
  /** enum proc_cn_event what */
  WHAT: 0,
  /** __u32 cpu: the CPU that emitted the event (and whose counter numbered cn_msg.seq). */
  CPU: 4,
  /** __u64 __attribute__((aligned(8))) timestamp_ns: ktime_get_ns(). */
  TIMESTAMP_NS: 8,
  /** union event_data */
  EVENT_DATA: 16,
  /** sizeof(struct proc_event) on Linux 6.x: the header plus the largest member (comm, exit). */
  SIZE: 40,
} as const;

/** Offsets inside union event_data (relative to PROC_EVENT.EVENT_DATA). */
export const EVENT_DATA = {
  /** struct { __u32 err; } ack */
  ACK_ERR: 0,
  ACK_SIZE: 4,
  /** struct fork_proc_event { parent_pid, parent_tgid, child_pid, child_tgid } */
  FORK_PARENT_PID: 0,
  FORK_PARENT_TGID: 4,
  FORK_CHILD_PID: 8,
  FORK_CHILD_TGID: 12,
  FORK_SIZE: 16,
  /** Every other member starts with __kernel_pid_t process_pid, process_tgid. */
  PROCESS_PID: 0,
  PROCESS_TGID: 4,
  /** struct exec_proc_event, struct sid_proc_event */
  EXEC_SIZE: 8,
  SID_SIZE: 8,
  /** struct id_proc_event { ...; union { ruid; rgid } r; union { euid; egid } e; } */
  ID_R: 8,
  ID_E: 12,
  ID_SIZE: 16,
  /** struct ptrace_proc_event { ...; tracer_pid, tracer_tgid } */
  PTRACE_TRACER_PID: 8,
  PTRACE_TRACER_TGID: 12,
  PTRACE_SIZE: 16,
  /** struct comm_proc_event { ...; char comm[16]; } */
  COMM_COMM: 8,
  COMM_LEN: 16,
  COMM_SIZE: 24,
  /** struct coredump_proc_event { ...; parent_pid, parent_tgid } */
  COREDUMP_PARENT_PID: 8,
  COREDUMP_PARENT_TGID: 12,
  COREDUMP_SIZE: 16,
  /** struct exit_proc_event { ...; __u32 exit_code, exit_signal; parent_pid, parent_tgid } */
  EXIT_EXIT_CODE: 8,
  EXIT_EXIT_SIGNAL: 12,
  EXIT_PARENT_PID: 16,
  EXIT_PARENT_TGID: 20,
  EXIT_SIZE: 24,
} as const;

/** Bytes of one proc connector datagram: nlmsghdr + cn_msg + proc_event (76 on Linux 6.x). */
export const PROC_EVENT_MESSAGE_SIZE = NLMSGHDR.SIZE + CN_MSG.SIZE + PROC_EVENT.SIZE;

// ---------------------------------------------------------------------------------------------
// Requests

export interface McastRequest {
  op: typeof PROC_CN_MCAST_LISTEN | typeof PROC_CN_MCAST_IGNORE;
  /** proc_input.event_type; omitted = the legacy 4-byte request (every kind). */
  eventType?: number;
  /** nlmsghdr.nlmsg_seq and cn_msg.seq (the ACK echoes cn_msg.seq). */
  seq: number;
  /** cn_msg.ack: the kernel's ACK carries ack + 1, which recognises our own ACK. */
  ack: number;
}

/** Build the netlink message for a PROC_CN_MCAST_LISTEN/IGNORE request. */
export function buildMcastRequest(request: McastRequest): Buffer {
  const payload = request.eventType === undefined ? PROC_CN_MCAST_OP_SIZE : PROC_INPUT.SIZE;
  const total = NLMSGHDR.SIZE + CN_MSG.SIZE + payload;
  const buf = Buffer.alloc(nlmsgAlign(total));
  buf.writeUInt32LE(total, NLMSGHDR.LEN);
  buf.writeUInt16LE(NLMSG_DONE, NLMSGHDR.TYPE);
  buf.writeUInt16LE(0, NLMSGHDR.FLAGS);
  buf.writeUInt32LE(request.seq >>> 0, NLMSGHDR.SEQ);
  buf.writeUInt32LE(0, NLMSGHDR.PID);
  const cn = NLMSGHDR.SIZE;
  buf.writeUInt32LE(CN_IDX_PROC, cn + CN_MSG.IDX);
  buf.writeUInt32LE(CN_VAL_PROC, cn + CN_MSG.VAL);
  buf.writeUInt32LE(request.seq >>> 0, cn + CN_MSG.SEQ);
  buf.writeUInt32LE(request.ack >>> 0, cn + CN_MSG.ACK);
  buf.writeUInt16LE(payload, cn + CN_MSG.LEN);
  buf.writeUInt16LE(0, cn + CN_MSG.FLAGS);
  const data = cn + CN_MSG.SIZE;
  buf.writeUInt32LE(request.op, data + PROC_INPUT.MCAST_OP);
  if (request.eventType !== undefined) {
    buf.writeUInt32LE(request.eventType >>> 0, data + PROC_INPUT.EVENT_TYPE);
  }
  return buf;
}

/** The fields of a fork event, for buildForkDatagram. */
export interface ForkDatagramFields {
  parentPid: number;
  parentTgid: number;
  childPid: number;
  childTgid: number;
  /** proc_event.timestamp_ns (CLOCK_MONOTONIC ns; exact below 2^53). */
  timestampNs: number;
  /** cn_msg.seq and proc_event.cpu, as the kernel numbers each CPU's events. */
  seq?: number;
  cpu?: number;
}

/**
 * A PROC_EVENT_FORK datagram laid out as the kernel sends it (proc_fork_connector() and
 * send_msg(), drivers/connector/cn_proc.c, Linux 6.x: one NLMSG_DONE holding one cn_msg holding a
 * whole struct proc_event, 76 bytes, the rest of the union zeroed), into `out` at `offset`;
 * returns the bytes written. For the receive worker's warm-up,
 * which relays such datagrams through the fast path before the first real fork.
 */
export function buildForkDatagram(
  fields: ForkDatagramFields,
  out: Buffer = Buffer.alloc(PROC_EVENT_MESSAGE_SIZE),
  offset = 0,
): number {
  out.fill(0, offset, offset + PROC_EVENT_MESSAGE_SIZE);
  out.writeUInt32LE(PROC_EVENT_MESSAGE_SIZE, offset + NLMSGHDR.LEN);
  out.writeUInt16LE(NLMSG_DONE, offset + NLMSGHDR.TYPE);
  // cn_netlink_send_mult() puts cn_msg.seq into nlmsg_seq as well (drivers/connector/connector.c).
  out.writeUInt32LE((fields.seq ?? 0) >>> 0, offset + NLMSGHDR.SEQ);
  const cn = offset + NLMSGHDR.SIZE;
  out.writeUInt32LE(CN_IDX_PROC, cn + CN_MSG.IDX);
  out.writeUInt32LE(CN_VAL_PROC, cn + CN_MSG.VAL);
  out.writeUInt32LE((fields.seq ?? 0) >>> 0, cn + CN_MSG.SEQ);
  out.writeUInt16LE(PROC_EVENT.SIZE, cn + CN_MSG.LEN);
  const ev = cn + CN_MSG.DATA;
  out.writeUInt32LE(PROC_EVENT_FORK, ev + PROC_EVENT.WHAT);
  out.writeUInt32LE((fields.cpu ?? 0) >>> 0, ev + PROC_EVENT.CPU);
  out.writeBigUInt64LE(BigInt(fields.timestampNs), ev + PROC_EVENT.TIMESTAMP_NS);
  const d = ev + PROC_EVENT.EVENT_DATA;
  out.writeInt32LE(fields.parentPid, d + EVENT_DATA.FORK_PARENT_PID);
  out.writeInt32LE(fields.parentTgid, d + EVENT_DATA.FORK_PARENT_TGID);
  out.writeInt32LE(fields.childPid, d + EVENT_DATA.FORK_CHILD_PID);
  out.writeInt32LE(fields.childTgid, d + EVENT_DATA.FORK_CHILD_TGID);
  return PROC_EVENT_MESSAGE_SIZE;
}

/** struct sockaddr_nl bound to the proc connector's multicast group. */
export function buildSockaddrNl(groups: number = CN_IDX_PROC, portId = 0): Buffer {
  const addr = Buffer.alloc(SOCKADDR_NL.SIZE);
  addr.writeUInt16LE(16 /* AF_NETLINK */, SOCKADDR_NL.FAMILY);
  addr.writeUInt32LE(portId >>> 0, SOCKADDR_NL.PID);
  addr.writeUInt32LE(groups >>> 0, SOCKADDR_NL.GROUPS);
  return addr;
}

// ---------------------------------------------------------------------------------------------
// Parser

/** Where the parser delivers what it reads. Methods are called in datagram order. */
export interface CnProcSink {
  /** A proc event; `seq` is cn_msg.seq (per-CPU, see PROC_EVENT.CPU). */
  event(event: ProcEvent, seq: number): void;
  /**
   * A PROC_EVENT_NONE message: the kernel's answer to someone's listen/ignore request (it is
   * multicast to every unfiltered listener). Where cn_proc_ack() goes through send_msg() (Linux
   * 6.x; observed on 6.18), send_msg() overwrites seq and cpu, so the ACK takes a number in the
   * emitting CPU's sequence like any event; older kernels sent `cpu` = -1 (0xffffffff) and echoed
   * the request's seq.
   */
  ack(ack: number, err: number, seq: number, cpu: number): void;
  /** Something unreadable: too short, inconsistent lengths, an unknown `what`. */
  malformed(reason: string): void;
}

const commDecoder = new TextDecoder('utf-8');

/**
 * Parse one datagram (`length` bytes of `view` from `start`): walk its netlink messages and
 * deliver each proc connector message to `sink`. Messages of other connector ids, NLMSG_NOOP and
 * padding are skipped silently; anything inconsistent is reported to `sink.malformed` and the
 * rest of the datagram is skipped (its lengths can no longer be trusted). Never throws.
 */
export function parseDatagram(
  view: DataView,
  start: number,
  length: number,
  sink: CnProcSink,
): void {
  const end = Math.min(start + length, view.byteLength);
  let off = start;
  while (off + NLMSGHDR.SIZE <= end) {
    const nlLen = view.getUint32(off + NLMSGHDR.LEN, true);
    const nlType = view.getUint16(off + NLMSGHDR.TYPE, true);
    if (nlLen < NLMSGHDR.SIZE || off + nlLen > end) {
      sink.malformed(`nlmsghdr.nlmsg_len ${nlLen} does not fit the ${end - off} bytes left`);
      return;
    }
    if (nlType === NLMSG_DONE) parseCnMsg(view, off + NLMSGHDR.SIZE, nlLen - NLMSGHDR.SIZE, sink);
    else if (nlType !== NLMSG_NOOP) sink.malformed(`unexpected nlmsg_type ${nlType}`);
    off += nlmsgAlign(nlLen);
  }
  if (off < end && end - off >= NLMSG_ALIGNTO) {
    sink.malformed(`${end - off} trailing bytes shorter than a nlmsghdr`);
  }
}

function parseCnMsg(view: DataView, cn: number, avail: number, sink: CnProcSink): void {
  if (avail < CN_MSG.SIZE) {
    sink.malformed(`cn_msg truncated: ${avail} of ${CN_MSG.SIZE} bytes`);
    return;
  }
  if (
    view.getUint32(cn + CN_MSG.IDX, true) !== CN_IDX_PROC ||
    view.getUint32(cn + CN_MSG.VAL, true) !== CN_VAL_PROC
  ) {
    return; // another connector user's message: not ours to judge
  }
  const dataLen = view.getUint16(cn + CN_MSG.LEN, true);
  if (CN_MSG.SIZE + dataLen > avail) {
    sink.malformed(`cn_msg.len ${dataLen} exceeds the ${avail - CN_MSG.SIZE} bytes present`);
    return;
  }
  const seq = view.getUint32(cn + CN_MSG.SEQ, true);
  const ev = cn + CN_MSG.DATA;
  if (dataLen < PROC_EVENT.EVENT_DATA) {
    sink.malformed(`proc_event truncated: ${dataLen} bytes`);
    return;
  }
  const what = view.getUint32(ev + PROC_EVENT.WHAT, true);
  const dataAvail = dataLen - PROC_EVENT.EVENT_DATA;
  const d = ev + PROC_EVENT.EVENT_DATA;
  const cpu = view.getUint32(ev + PROC_EVENT.CPU, true);
  if (what === PROC_EVENT_NONE) {
    const err = dataAvail >= EVENT_DATA.ACK_SIZE ? view.getUint32(d + EVENT_DATA.ACK_ERR, true) : 0;
    sink.ack(view.getUint32(cn + CN_MSG.ACK, true), err, seq, cpu);
    return;
  }
  const timestampNs = view.getBigUint64(ev + PROC_EVENT.TIMESTAMP_NS, true);
  const event = parseEventData(view, what, d, dataAvail, cpu, timestampNs);
  if (typeof event === 'string') sink.malformed(event);
  else sink.event(event, seq);
}

/** Decode union event_data for `what`; returns a reason string when it cannot. */
function parseEventData(
  view: DataView,
  what: number,
  d: number,
  avail: number,
  cpu: number,
  timestampNs: bigint,
): ProcEvent | string {
  // Plain statements rather than helper closures: this runs once per event on the main thread.
  switch (what) {
    case PROC_EVENT_FORK:
      if (avail < EVENT_DATA.FORK_SIZE)
        return truncated('fork_proc_event', EVENT_DATA.FORK_SIZE, avail);
      return {
        kind: 'fork',
        cpu,
        timestampNs,
        parentPid: view.getInt32(d + EVENT_DATA.FORK_PARENT_PID, true),
        parentTgid: view.getInt32(d + EVENT_DATA.FORK_PARENT_TGID, true),
        childPid: view.getInt32(d + EVENT_DATA.FORK_CHILD_PID, true),
        childTgid: view.getInt32(d + EVENT_DATA.FORK_CHILD_TGID, true),
      };
    case PROC_EVENT_EXEC:
      if (avail < EVENT_DATA.EXEC_SIZE)
        return truncated('exec_proc_event', EVENT_DATA.EXEC_SIZE, avail);
      return {
        kind: 'exec',
        cpu,
        timestampNs,
        processPid: view.getInt32(d + EVENT_DATA.PROCESS_PID, true),
        processTgid: view.getInt32(d + EVENT_DATA.PROCESS_TGID, true),
      };
    case PROC_EVENT_UID:
      if (avail < EVENT_DATA.ID_SIZE) return truncated('id_proc_event', EVENT_DATA.ID_SIZE, avail);
      return {
        kind: 'uid',
        cpu,
        timestampNs,
        processPid: view.getInt32(d + EVENT_DATA.PROCESS_PID, true),
        processTgid: view.getInt32(d + EVENT_DATA.PROCESS_TGID, true),
        ruid: view.getUint32(d + EVENT_DATA.ID_R, true),
        euid: view.getUint32(d + EVENT_DATA.ID_E, true),
      };
    case PROC_EVENT_GID:
      if (avail < EVENT_DATA.ID_SIZE) return truncated('id_proc_event', EVENT_DATA.ID_SIZE, avail);
      return {
        kind: 'gid',
        cpu,
        timestampNs,
        processPid: view.getInt32(d + EVENT_DATA.PROCESS_PID, true),
        processTgid: view.getInt32(d + EVENT_DATA.PROCESS_TGID, true),
        rgid: view.getUint32(d + EVENT_DATA.ID_R, true),
        egid: view.getUint32(d + EVENT_DATA.ID_E, true),
      };
    case PROC_EVENT_SID:
      if (avail < EVENT_DATA.SID_SIZE)
        return truncated('sid_proc_event', EVENT_DATA.SID_SIZE, avail);
      return {
        kind: 'sid',
        cpu,
        timestampNs,
        processPid: view.getInt32(d + EVENT_DATA.PROCESS_PID, true),
        processTgid: view.getInt32(d + EVENT_DATA.PROCESS_TGID, true),
      };
    case PROC_EVENT_PTRACE:
      if (avail < EVENT_DATA.PTRACE_SIZE)
        return truncated('ptrace_proc_event', EVENT_DATA.PTRACE_SIZE, avail);
      return {
        kind: 'ptrace',
        cpu,
        timestampNs,
        processPid: view.getInt32(d + EVENT_DATA.PROCESS_PID, true),
        processTgid: view.getInt32(d + EVENT_DATA.PROCESS_TGID, true),
        tracerPid: view.getInt32(d + EVENT_DATA.PTRACE_TRACER_PID, true),
        tracerTgid: view.getInt32(d + EVENT_DATA.PTRACE_TRACER_TGID, true),
      };
    case PROC_EVENT_COMM: {
      if (avail < EVENT_DATA.COMM_SIZE)
        return truncated('comm_proc_event', EVENT_DATA.COMM_SIZE, avail);
      const bytes = new Uint8Array(
        view.buffer,
        view.byteOffset + d + EVENT_DATA.COMM_COMM,
        EVENT_DATA.COMM_LEN,
      );
      const nul = bytes.indexOf(0);
      return {
        kind: 'comm',
        cpu,
        timestampNs,
        processPid: view.getInt32(d + EVENT_DATA.PROCESS_PID, true),
        processTgid: view.getInt32(d + EVENT_DATA.PROCESS_TGID, true),
        comm: commDecoder.decode(nul === -1 ? bytes : bytes.subarray(0, nul)),
      };
    }
    case PROC_EVENT_COREDUMP:
      if (avail < EVENT_DATA.COREDUMP_SIZE)
        return truncated('coredump_proc_event', EVENT_DATA.COREDUMP_SIZE, avail);
      return {
        kind: 'coredump',
        cpu,
        timestampNs,
        processPid: view.getInt32(d + EVENT_DATA.PROCESS_PID, true),
        processTgid: view.getInt32(d + EVENT_DATA.PROCESS_TGID, true),
        parentPid: view.getInt32(d + EVENT_DATA.COREDUMP_PARENT_PID, true),
        parentTgid: view.getInt32(d + EVENT_DATA.COREDUMP_PARENT_TGID, true),
      };
    case PROC_EVENT_EXIT >>> 0:
      if (avail < EVENT_DATA.EXIT_SIZE)
        return truncated('exit_proc_event', EVENT_DATA.EXIT_SIZE, avail);
      return {
        kind: 'exit',
        cpu,
        timestampNs,
        processPid: view.getInt32(d + EVENT_DATA.PROCESS_PID, true),
        processTgid: view.getInt32(d + EVENT_DATA.PROCESS_TGID, true),
        exitCode: view.getUint32(d + EVENT_DATA.EXIT_EXIT_CODE, true),
        exitSignal: view.getInt32(d + EVENT_DATA.EXIT_EXIT_SIGNAL, true),
        parentPid: view.getInt32(d + EVENT_DATA.EXIT_PARENT_PID, true),
        parentTgid: view.getInt32(d + EVENT_DATA.EXIT_PARENT_TGID, true),
      };
    default:
      return `unknown proc_event.what 0x${what.toString(16)}`;
  }
}

function truncated(name: string, size: number, avail: number): string {
  return `${name} truncated: ${avail} of ${size} bytes`;
}
