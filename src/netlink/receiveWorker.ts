/**
 * The receive loop, run in a worker_thread so that reading the socket never waits for the main
 * thread's event loop (a busy main thread must not become lost events: the kernel drops what does
 * not fit in the socket's receive buffer).
 *
 * Two loops, chosen at every turn:
 * - the fast path, with a relay attached while nothing is forwarded and no loss is being
 *   counted: block in recv (SO_RCVTIMEO = HEARTBEAT_MS), or in recvmmsg for all that are queued
 *   when behind, relay, repeat; the epoll set is looked at without waiting every HOUSEKEEPING_MS
 *   and at every timeout, after which the worker sleeps in epoll_wait with no timeout until
 *   something happens (waitWhileIdle);
 * - otherwise recv(MSG_DONTWAIT) one datagram at a time until EAGAIN, then epoll_wait on the
 *   socket, the stop eventfd and, with a relay, its doorbell and every registrant's pidfd.
 * Each datagram is:
 * - relayed here, when a fork relay is attached (src/relay/forkTable.ts): the four pids are read
 *   in place and each registrant is signalled in the same loop, nothing allocated per event;
 * - forwarded to the main thread (framed into the batch buffer, posted as one ArrayBuffer per
 *   drain) only while the `forward` flag is set: always without a relay; with one, only while
 *   the main thread needs events (subscription handshake, self-test, 'events' listeners), so
 *   the daemon's everyday path never crosses threads.
 * ProcConnector.close() writes the stop eventfd, raises CONTROL_STOP and wakes a blocked recv
 * (workerHost.ts), after which the loop drains once more, reports its final counters and
 * returns; the worker then exits on its own (it holds no handles).
 *
 * Batch format: datagrams back to back, each framed as [u32 LE length][bytes], padded to 4.
 *
 * ENOBUFS from recv means the kernel could not queue one or more messages (netlink_overrun(),
 * net/netlink/af_netlink.c): the loop counts it, reads the socket's exact drop counter
 * (SO_MEMINFO[SK_MEMINFO_DROPS]), posts a loss notice and keeps reading; once the queue has
 * emptied (the slow path's EAGAIN), it reads the counter again and posts the final figure: two
 * notices per overflow. It never stops on loss.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import {
  AF_UNIX,
  DatagramBatch,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLLIN,
  Errno,
  MSG_DONTWAIT,
  MSG_TRUNC,
  MSG_WAITFORONE,
  POLLIN,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  close,
  epollCreate1,
  epollCtl,
  epollWait,
  gettid,
  poll,
  read,
  recvInto,
  setReceiveTimeout,
  socketpair,
  syscallError,
  writeOrErrno,
} from '../native/libc';
import { EPOLL_EVENT, POLLFD } from '../native/structs';
import { CatchUpPriority, type CatchUpProbe, setThreadNice, threadNice } from './catchUpPriority';
import {
  EPOLL_TAG_DOORBELL,
  EPOLL_TAG_SOCKET,
  EPOLL_TAG_STOP,
  ForkSender,
  openWarmUpSender,
  type WarmUpReport,
  type ForkRelayNotice,
  type ForkRelayWorkerData,
} from '../relay/forkTable';
import {
  CN_IDX_PROC,
  CN_MSG,
  CN_VAL_PROC,
  EVENT_DATA,
  NLMSGHDR,
  NLMSG_DONE,
  PROC_EVENT,
  PROC_EVENT_FORK,
  PROC_EVENT_MESSAGE_SIZE,
  buildForkDatagram,
} from './cnProcStructs';
import { SK_MEMINFO_BYTES, readSocketDrops } from './socket';

/** What ProcConnector passes as workerData. */
export interface ReceiveWorkerData {
  role: typeof RECEIVE_WORKER_ROLE;
  /** The proc connector socket (owned by the main thread, which closes it after the worker). */
  fd: number;
  /** An eventfd; readable = stop. */
  wakeFd: number;
  /** Size of the batch buffer. */
  batchBytes: number;
  /** Int32[CONTROL_INTS], shared: CONTROL_FORWARD is 1 while the main thread wants datagrams. */
  control: SharedArrayBuffer;
  /** The relay's fast path, if any. */
  relay?: ForkRelayWorkerData;
  /** The fast path's nice value while behind (catchUpPriority.ts), or undefined for none. */
  catchUpNice?: number;
}

const RECEIVE_WORKER_ROLE = 'relayfork-netlink-receive';

// This module's constants are declared, then exported together (after HOUSEKEEPING_WORK), so that
// its own code, the fast path among it, reads them as constants, not as loads from its exports
// object (TypeScript rewrites uses of an `export const` into `exports.NAME`).
/** Index of the forward flag in ReceiveWorkerData.control. */
const CONTROL_FORWARD = 0;
/**
 * Index of the stop flag: 1 once the main thread has asked the worker to stop. The fast path
 * reads it after every recv, since a thread blocked in recv is not woken by the stop eventfd
 * (ReceiveWorkerHost.stop() also wakes it with a datagram, socket.ts wakeReader).
 */
const CONTROL_STOP = 1;
/** Index of the catch-up count: how many times the worker raised its priority (CatchUpPriority). */
const CONTROL_CATCH_UPS = 2;
const CONTROL_INTS = 3;

/** Messages from the worker to the main thread. */
export type ReceiveWorkerMessage =
  | { type: 'ready'; catchUp: CatchUpProbe }
  | { type: 'batch'; buffer: ArrayBuffer }
  | { type: 'loss'; overruns: number; dropped: number }
  | { type: 'relay'; notice: ForkRelayNotice }
  | { type: 'stopped'; overruns: number; dropped: number }
  | { type: 'fatal'; message: string; code?: string };

/** [u32 length] before each datagram in a batch. */
const FRAME_HEADER_BYTES = 4;
/**
 * Room kept free for the next datagram. A proc connector datagram is 76 bytes on Linux 6.x; a
 * larger one (a future kernel) is truncated here, reported by MSG_TRUNC and counted as malformed
 * by the parser rather than overrunning the batch.
 */
const MAX_DATAGRAM_BYTES = 4096;
/** Default batch buffer: ~3,300 events of 80 framed bytes per post at most. */
const DEFAULT_BATCH_BYTES = 256 * 1024;

/**
 * Datagrams the fast path takes per recvmmsg(2) (MSG_WAITFORONE: it blocks for the first only)
 * when it is behind: up to this many for one system call. Each slot is MAX_DATAGRAM_BYTES (a
 * page, touched only once a backlog fills it).
 */
const RECEIVE_SLOTS = 32;
const SLOT_INTS = MAX_DATAGRAM_BYTES >> 2;
/**
 * While the fast path keeps up it reads with recv(2), and tries recvmmsg once in this many
 * receives to find out whether a backlog has formed; it stays on recvmmsg while that returns more
 * than one datagram. Measured (Node 20, Linux 6.18.44, 76-byte datagrams): a recvmmsg that finds
 * one datagram costs ~0.7 us more CPU than a recv (it tries the queue again, MSG_DONTWAIT, for the
 * second), a tenth of the C relay's whole cost per thread event; behind a backlog it saves
 * ~0.3-0.5 us per datagram. One try in 16 costs ~0.04 us per datagram.
 */
const RECEIVE_PROBE_EVERY = 16;

/**
 * Without a relay, under load, the worker waits this long before posting a small batch (see the
 * loop). It bounds the added latency of forwarded events; the socket queue grows by rate x
 * window meanwhile (110 events at 110k/s). With a relay the worker never waits: a signal must
 * not be a millisecond late.
 */
const COALESCE_WINDOW_MS = 1;

const POLLNVAL = 0x20;
const EPOLL_BATCH = 64;

/**
 * Where a fork datagram's fields are: one nlmsghdr (NLMSG_DONE) holding one cn_msg holding one
 * proc_event; the connector sends each event as a datagram of its own (cn_netlink_send_mult(),
 * drivers/connector/connector.c, Linux 6.x), so only the first message is looked at here. Any
 * other shape (an ACK, another kind under the legacy subscription) is not a fork to relay.
 */
const FORK_MIN_BYTES = NLMSGHDR.SIZE + CN_MSG.DATA + PROC_EVENT.EVENT_DATA + EVENT_DATA.FORK_SIZE;
const AT_CN = NLMSGHDR.SIZE;
const AT_EVENT = NLMSGHDR.SIZE + CN_MSG.DATA;
const AT_FORK = AT_EVENT + PROC_EVENT.EVENT_DATA;
/**
 * The same fields as Int32 indices into the datagram (every offset is 4-aligned). Netlink is
 * host-endian, as an Int32Array is; nlmsg_type is the low half of its word on little-endian hosts.
 */
const I_NL_TYPE = NLMSGHDR.TYPE >> 2;
const I_CN_IDX = (AT_CN + CN_MSG.IDX) >> 2;
const I_CN_VAL = (AT_CN + CN_MSG.VAL) >> 2;
const I_WHAT = (AT_EVENT + PROC_EVENT.WHAT) >> 2;
const I_TIMESTAMP = (AT_EVENT + PROC_EVENT.TIMESTAMP_NS) >> 2;
const I_PARENT_PID = (AT_FORK + EVENT_DATA.FORK_PARENT_PID) >> 2;
const I_CHILD_PID = (AT_FORK + EVENT_DATA.FORK_CHILD_PID) >> 2;
const I_CHILD_TGID = (AT_FORK + EVENT_DATA.FORK_CHILD_TGID) >> 2;
/**
 * The values the fast path compares with, read once here: cnProcStructs' compiled exports object
 * is in dictionary mode (checked with %HasFastProperties on Node 20), so each load of an imported
 * constant in the loop was a generic property lookup, even in optimized code.
 */
const FAST_NLMSG_DONE = NLMSG_DONE;
const FAST_CN_IDX_PROC = CN_IDX_PROC;
const FAST_CN_VAL_PROC = CN_VAL_PROC;
const FAST_PROC_EVENT_FORK = PROC_EVENT_FORK;

/**
 * Synthetic forks the worker relays at start-up (warmUpFastPath), in bursts of these sizes, with
 * ids from WARM_UP_FIRST_ID (above any pid: PID_MAX_LIMIT is 2^22, include/linux/threads.h) and
 * timestamps WARM_UP_SPACING_NS apart (so that the housekeeping return is taken too). Measured
 * (Linux 6.18.44, this 2-core VM): ~45 ms once, at start-up. With 10,000, Node 20 and 22 have
 * compiled the loop, relayDatagram and onFork with TurboFan before the worker says 'ready'
 * (--trace-opt); Node 24 compiles the loop itself with TurboFan during the first storm (its
 * other tiers have it by then). 5,000 left Node 22's loop to the first storm too.
 */
const WARM_UP_DATAGRAMS = 10_000;
const WARM_UP_BURSTS = [1, 1, 2, 3, 40];
const WARM_UP_FIRST_ID = 0x40000000;
const WARM_UP_SPACING_NS = 50_000;

/**
 * How long the fast path's recv waits for a datagram (SO_RCVTIMEO) before the worker does its
 * housekeeping and goes idle (waitWhileIdle), and how often the slow path beats (see ForkTable).
 */
const HEARTBEAT_MS = 1000;

/**
 * While forks keep the fast path's recv busy, how often it looks at the epoll set without
 * waiting (registrants' exits, the doorbell, stop) and at the drop counter after a loss: a
 * registrant's exit is seen within this much of its pidfd polling readable (a second at most
 * when forks are sparse, when the receive times out; at once on a quiet machine, whose worker
 * waits on the epoll set). Ten epoll_wait calls a second cost nothing measurable; one per fork
 * cost the worker half again its CPU.
 */
const HOUSEKEEPING_MS = 100;

/**
 * The fast path's clock: the kernel's own timestamp of each event (proc_event.timestamp_ns,
 * ktime_get_ns(), i.e. CLOCK_MONOTONIC; drivers/connector/cn_proc.c) in units of 2^22 ns
 * (4.19 ms), kept to 31 bits so that it is always a small integer; differences are taken modulo
 * 2^31 (the count wraps every 104 days). Reading the time this way costs nothing per fork:
 * performance.now() in a worker runs Node's argument validators and showed as 2% of the
 * worker's profile under make -j2.
 */
const TICK_SHIFT = 22;
const TICK_MASK = 0x7fffffff;
const HOUSEKEEPING_TICKS = Math.ceil((HOUSEKEEPING_MS * 1e6) / 2 ** TICK_SHIFT);

/** The tick of a proc_event's timestamp_ns, given as its low and high 32 bits. */
export function eventTick(timestampLo: number, timestampHi: number): number {
  return ((timestampHi << (32 - TICK_SHIFT)) | (timestampLo >>> TICK_SHIFT)) & TICK_MASK;
}

/**
 * Ticks from `from` to `to` (less than 104 days later), across a wrap. Events stamped on another
 * CPU may come a little out of order: a `to` slightly before `from` reads as a span of ~2^31,
 * which only makes housekeeping come early.
 */
export function ticksSince(from: number, to: number): number {
  return (to - from) & TICK_MASK;
}

/**
 * Housekeeping is also due after this much work (datagrams read plus signals sent) since the
 * last, whatever the events' timestamps say: when the worker is behind (a backlog of a storm,
 * thousands of registrants whose sends take 3-5 us each), 100 ms of events can take many seconds
 * to relay, and the watchdog's heartbeat, registrants' exits and new registrants' pidfds must
 * still be seen about every HOUSEKEEPING_MS of real time (20,000 units at 5 us: 100 ms).
 */
const HOUSEKEEPING_WORK = 20_000;

export {
  RECEIVE_WORKER_ROLE,
  CONTROL_FORWARD,
  CONTROL_STOP,
  CONTROL_CATCH_UPS,
  CONTROL_INTS,
  FRAME_HEADER_BYTES,
  MAX_DATAGRAM_BYTES,
  DEFAULT_BATCH_BYTES,
  RECEIVE_SLOTS,
  RECEIVE_PROBE_EVERY,
  COALESCE_WINDOW_MS,
  HEARTBEAT_MS,
  HOUSEKEEPING_MS,
  TICK_SHIFT,
  HOUSEKEEPING_TICKS,
  HOUSEKEEPING_WORK,
  WARM_UP_DATAGRAMS,
  WARM_UP_FIRST_ID,
};

/** relayDatagram's answer for a datagram that is not a proc event (it carries no timestamp). */
const NO_TICK = -1;

/** What handleReady found among the ready fds, as bits. */
const READY_STOP = 1;
const READY_SOCKET = 2;

export function runReceiveLoop(data: ReceiveWorkerData, port: MessagePort): void {
  const { fd, wakeFd } = data;
  const control = new Int32Array(data.control);
  const batchBytes = Math.max(data.batchBytes, 2 * (FRAME_HEADER_BYTES + MAX_DATAGRAM_BYTES));
  const batch = Buffer.from(new ArrayBuffer(batchBytes));
  /**
   * The fast path's datagrams, read in place, as bytes and as ints for the relay; the slow path
   * reads one at a time into the first slot (`rx`).
   */
  const slots = new DatagramBatch(RECEIVE_SLOTS, MAX_DATAGRAM_BYTES);
  const rx = slots.bytes.subarray(0, MAX_DATAGRAM_BYTES);
  const rx32 = slots.ints;
  const meminfo = Buffer.alloc(SK_MEMINFO_BYTES);
  const wakeValue = Buffer.alloc(8);
  const events = Buffer.alloc(EPOLL_BATCH * EPOLL_EVENT.SIZE);
  const wakeOnly = Buffer.alloc(POLLFD.SIZE);
  wakeOnly.writeInt32LE(wakeFd, POLLFD.FD);
  wakeOnly.writeInt16LE(POLLIN, POLLFD.EVENTS);

  const epfd = epollCreate1(EPOLL_CLOEXEC);
  const addToEpoll = (target: number, tag: number): void => {
    const ev = Buffer.alloc(EPOLL_EVENT.SIZE);
    ev.writeUInt32LE(EPOLLIN, EPOLL_EVENT.EVENTS);
    ev.writeUInt32LE(tag, EPOLL_EVENT.DATA);
    const errno = epollCtl(epfd, EPOLL_CTL_ADD, target, ev);
    if (errno !== 0) throw syscallError('epoll_ctl', errno);
  };

  let used = 0;
  let overruns = 0;
  let dropped = 0;
  let lossSinceLastDrain = false;

  const flush = (): void => {
    if (used === 0) return;
    // A copy of exactly the bytes used is transferred; the big buffer stays here for reuse, so a
    // quiet machine (one event per wake-up) does not allocate a large buffer per event.
    const out = batch.buffer.slice(0, used);
    port.postMessage({ type: 'batch', buffer: out } satisfies ReceiveWorkerMessage, [out]);
    used = 0;
  };

  const postLoss = (): void => {
    port.postMessage({ type: 'loss', overruns, dropped } satisfies ReceiveWorkerMessage);
  };

  let sender: ForkSender | undefined;

  /** The fast path's work since its last housekeeping: datagrams read plus signals sent. */
  let work = 0;
  /**
   * The tick of the event at which the fast path last returned for housekeeping, kept across
   * returns so that housekeeping comes at the first event HOUSEKEEPING_MS after it; NO_TICK
   * after a receive timeout.
   */
  let lastHouseKeepingTick = NO_TICK;
  /** The fast path reads with recvmmsg (behind: the last one returned more than one datagram). */
  let behind = false;
  /** recv calls since the last recvmmsg, while not behind. */
  let receivesSinceProbe = 0;
  const tid = gettid();
  const ownNice = threadNice(tid);
  /** The worker's priority while the fast path is behind (only with a relay: the fast path). */
  const catchUp = new CatchUpPriority(
    tid,
    data.relay !== undefined ? data.catchUpNice : undefined,
    ownNice,
    RECEIVE_SLOTS,
    setThreadNice,
    control.subarray(CONTROL_CATCH_UPS, CONTROL_CATCH_UPS + 1),
  );
  /** The warm-up's: never raised (its bursts are ours, and the thread's priority is real). */
  const noCatchUp = new CatchUpPriority(tid, undefined, ownNice, RECEIVE_SLOTS, setThreadNice);

  /**
   * Relay the datagram of `n` bytes at int `at` of the slots if it is a fork, and count it and
   * its sends in `work`; returns the event's tick (any proc event), or NO_TICK.
   */
  const relayDatagram = (relay: ForkSender, n: number, at: number): number => {
    work++;
    if (
      n < AT_FORK ||
      (rx32[at + I_NL_TYPE] & 0xffff) !== FAST_NLMSG_DONE ||
      rx32[at + I_CN_IDX] !== FAST_CN_IDX_PROC ||
      rx32[at + I_CN_VAL] !== FAST_CN_VAL_PROC
    ) {
      return NO_TICK;
    }
    const tsLo = rx32[at + I_TIMESTAMP];
    const tsHi = rx32[at + I_TIMESTAMP + 1];
    if (n >= FORK_MIN_BYTES && rx32[at + I_WHAT] === FAST_PROC_EVENT_FORK) {
      work += relay.onFork(
        rx32[at + I_PARENT_PID],
        rx32[at + I_CHILD_PID],
        rx32[at + I_CHILD_TGID],
        tsLo,
        tsHi,
      );
    }
    return eventTick(tsLo, tsHi);
  };

  /**
   * Frame the datagram of `n` bytes (as recv said) in slot `slot` if the main thread wants
   * datagrams.
   */
  const forward = (n: number, slot: number): void => {
    if (Atomics.load(control, CONTROL_FORWARD) === 0) return;
    const kept = Math.min(n, MAX_DATAGRAM_BYTES);
    const from = slot * MAX_DATAGRAM_BYTES;
    if (batchBytes - used < FRAME_HEADER_BYTES + MAX_DATAGRAM_BYTES) flush();
    batch.writeUInt32LE(kept, used);
    slots.bytes.copy(batch, used + FRAME_HEADER_BYTES, from, from + kept);
    used += FRAME_HEADER_BYTES + ((kept + 3) & ~3);
  };

  /** Relay the datagram in `rx` (`n` bytes as recv said), and frame it if forwarding. */
  const take = (n: number): void => {
    if (sender !== undefined) relayDatagram(sender, n, 0);
    forward(n, 0);
  };

  /** recv said ENOBUFS: events were lost. Deliver what came before the loss first, in order. */
  const overrun = (): void => {
    overruns++;
    dropped = readSocketDrops(fd, meminfo);
    flush();
    postLoss();
    lossSinceLastDrain = true;
  };

  /** Read until EAGAIN. */
  const drain = (): void => {
    for (;;) {
      const n = recvInto(fd, rx, MSG_DONTWAIT | MSG_TRUNC);
      if (n >= 0) take(n);
      else if (n === -Errno.EAGAIN) return;
      else if (n === -Errno.ENOBUFS) overrun();
    }
  };

  /** Handle what epoll reported; returns READY_STOP and READY_SOCKET if they were among it. */
  const handleReady = (ready: number): number => {
    let found = 0;
    for (let i = 0; i < ready; i++) {
      const tag = events.readUInt32LE(i * EPOLL_EVENT.SIZE + EPOLL_EVENT.DATA);
      if (tag === EPOLL_TAG_STOP) found |= READY_STOP;
      else if (tag === EPOLL_TAG_SOCKET) found |= READY_SOCKET;
      else if (tag === EPOLL_TAG_DOORBELL) sender?.onDoorbell();
      else sender?.onPidfdReadable(tag);
    }
    return found;
  };

  /**
   * The fast path's housekeeping, whenever relayUntilHouseKeeping returns (about every
   * HOUSEKEEPING_MS while forks flow, and at every receive timeout): what the epoll set has to
   * say without waiting (registrant exits, the doorbell, stop).
   */
  const houseKeep = (): boolean => {
    // Also when only datagrams other than forks arrive (every kind, on kernels before 6.6).
    sender?.beat();
    let stop = false;
    for (;;) {
      const ready = epollWait(epfd, events, EPOLL_BATCH, 0);
      if ((handleReady(ready) & READY_STOP) !== 0) stop = true;
      if (ready < EPOLL_BATCH) break;
    }
    return stop;
  };

  /**
   * The fast path found the socket quiet for HEARTBEAT_MS: sleep in epoll_wait, with no timeout,
   * until a datagram comes (then back to the fast path's recv), or stop; a registrant's exit and
   * the doorbell (a change of the set, or the watchdog's probe, ForkTable.probeWorker) are taken
   * as they come, each wake-up beating. Returns true on stop. Why not go on waking with the
   * receive timeout: measured (Linux 6.18.44, this 2-core VM, Node 20), each of those wake-ups
   * cost the idle worker 0.3-0.6 ms of CPU (the caches and TLB cold after a second asleep), 0.3 to
   * 0.8 ms a second in all where the C relay, blocked in recv, costs none; and a registrant's
   * exit on a quiet machine is seen at once instead of within a second. The price is one
   * epoll_wait per quiet spell (the first fork after it wakes epoll_wait, then recv reads it).
   */
  const waitWhileIdle = (relay: ForkSender): boolean => {
    for (;;) {
      const found = handleReady(epollWait(epfd, events, EPOLL_BATCH, -1));
      relay.beat();
      if ((found & READY_STOP) !== 0) return true;
      if ((found & READY_SOCKET) !== 0) return false;
    }
  };

  /**
   * The fast path: block in recv for a datagram, relay it, repeat: one system call per fork
   * besides the sends, as the C relay makes. When behind (found by a recvmmsg every
   * RECEIVE_PROBE_EVERY receives), block in recvmmsg instead, which takes every datagram queued
   * (up to RECEIVE_SLOTS) for one call, until it finds one alone. Returns how many datagrams the
   * last call read, or its -errno, once housekeeping is due (a receive timeout, that is a quiet
   * HEARTBEAT_MS; HOUSEKEEPING_MS of events by their timestamps; or HOUSEKEEPING_WORK done), on
   * a loss or EINTR, on stop, or when the main thread wants datagrams (those just read while the
   * flag was up are framed and posted at once, since it may be down again by the next turn).
   * Housekeeping and stop are looked at after each call's datagrams have all been relayed: none
   * is left behind in the slots. A loop of its own with only what a fork needs in it. Measured
   * under make -j2 (~100 forks a second; every wake-up finds the caches cold): the fork path as
   * it was before (one turn of the outer loop per fork, a performance.now() per turn, Buffer
   * reads of the datagram, constants loaded from other modules' exports) cost the worker
   * 120-130 us per fork; this loop costs 80-100 us, a bare recv-and-send loop in JavaScript 80,
   * the C relay 55. `socket` and `flags` are the proc connector socket and the shared control
   * flags, except in the warm-up (warmUpFastPath), which runs this same code on its own.
   */
  const relayUntilHouseKeeping = (
    socket: number,
    relay: ForkSender,
    flags: Int32Array,
    priority: CatchUpPriority,
  ): number => {
    work = 0;
    for (;;) {
      let got: number;
      /** The first datagram's length (as recv or msg_len said, MSG_TRUNC: its full length). */
      let first: number;
      if (behind || ++receivesSinceProbe >= RECEIVE_PROBE_EVERY) {
        receivesSinceProbe = 0;
        got = slots.receive(socket, MSG_WAITFORONE | MSG_TRUNC);
        behind = got > 1;
        priority.afterBatch(got);
        first = got > 0 ? slots.lengthOf(0) : 0;
      } else {
        first = recvInto(socket, rx, MSG_TRUNC);
        got = first < 0 ? first : 1;
      }
      if (got < 0) {
        // After a quiet HEARTBEAT_MS there is no event time to count from: the next event's
        // housekeeping comes at once, so an exit is still seen within a second.
        if (got === -Errno.EAGAIN) lastHouseKeepingTick = NO_TICK;
        return got;
      }
      let tick = NO_TICK;
      let forwarded = false;
      for (let i = 0; i < got; i++) {
        const n = i === 0 ? first : slots.lengthOf(i);
        const t = relayDatagram(relay, n, i * SLOT_INTS);
        if (t !== NO_TICK) tick = t;
        if (Atomics.load(flags, CONTROL_FORWARD) !== 0) {
          forward(n, i);
          forwarded = true;
        }
      }
      if (forwarded) {
        flush();
        return got;
      }
      if (
        tick !== NO_TICK &&
        (lastHouseKeepingTick === NO_TICK ||
          ticksSince(lastHouseKeepingTick, tick) >= HOUSEKEEPING_TICKS)
      ) {
        lastHouseKeepingTick = tick;
        return got;
      }
      if (Atomics.load(flags, CONTROL_STOP) !== 0 || work >= HOUSEKEEPING_WORK) return got;
    }
  };

  /**
   * Relay WARM_UP_DATAGRAMS synthetic forks through the fast path before the worker says
   * 'ready': the same loop, relayDatagram, ForkSender.onFork and pidfd_send_signal as a real
   * fork takes, but read from a socketpair of our own and sent with signal 0 to this process
   * only (openWarmUpSender: nothing is delivered, no counter of the daemon's table moves), in
   * bursts that take both the recv and the recvmmsg branch, process forks and threads alike.
   * Why: V8 runs a function in its interpreter until it has run often enough to be compiled,
   * and a daemon that has just started has seen a few forks at most. Measured (Node 20, Linux
   * 6.18.44, a 10,000-fork storm 10 s after start, 10 registrants): the first 5% of the forks
   * had a p99 latency of 3.2 ms against 1.2 ms for the rest, and the storm's p99 was 1.5 ms
   * against the C relay's 0.53; after an earlier storm (the code compiled) it was 0.38 ms.
   */
  const warmUpFastPath = (): WarmUpReport => {
    const started = performance.now();
    // V8 throws away every optimised function of the isolate the first time any ArrayBuffer is
    // detached (its array-buffer-detaching protector; seen with --trace-deopt as "code
    // dependencies" on Node 20), and flush() detaches one with every batch it transfers, the
    // first during the subscription handshake. Detach one now, so that the warm-up's code is
    // compiled as it will stay.
    const spent = new ArrayBuffer(0);
    structuredClone(spent, { transfer: [spent] });
    const warm = openWarmUpSender();
    let pair: [number, number] | undefined;
    try {
      pair = socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      const [reader, writer] = pair;
      // Flags of its own: the main thread's forward flag must not take synthetic datagrams.
      const quiet = new Int32Array(new SharedArrayBuffer(CONTROL_INTS * 4));
      // One datagram, its fields changed in place: the warm-up allocates nothing per fork, so
      // that it leaves no garbage for a scavenge to collect in the middle of the first storm.
      const datagram = Buffer.from(new ArrayBuffer(PROC_EVENT_MESSAGE_SIZE));
      const fields = new Int32Array(datagram.buffer);
      buildForkDatagram(
        {
          parentPid: WARM_UP_FIRST_ID,
          parentTgid: WARM_UP_FIRST_ID,
          childPid: WARM_UP_FIRST_ID,
          childTgid: WARM_UP_FIRST_ID,
          timestampNs: 0,
        },
        datagram,
      );
      for (let made = 0, burst = 0; made < WARM_UP_DATAGRAMS; burst++) {
        const n = Math.min(WARM_UP_BURSTS[burst % WARM_UP_BURSTS.length], WARM_UP_DATAGRAMS - made);
        for (let i = 0; i < n; i++, made++) {
          const child = WARM_UP_FIRST_ID + 1 + made;
          fields[I_CHILD_PID] = child;
          // Every other one a thread of the parent: both of onFork's branches.
          fields[I_CHILD_TGID] = made % 2 === 0 ? child : WARM_UP_FIRST_ID;
          fields[I_TIMESTAMP] = made * WARM_UP_SPACING_NS; // below 2^31 (see WARM_UP_DATAGRAMS)
          // A small send buffer: relay what is queued (an empty queue takes one at least).
          const wrote = writeOrErrno(writer, datagram);
          if (wrote === -Errno.EAGAIN) break;
          if (wrote < 0) throw syscallError('write', -wrote);
        }
        // Now and then a change of the set, which onFork takes up before its sends.
        if (burst % WARM_UP_BURSTS.length === 0) warm.republish();
        while (relayUntilHouseKeeping(reader, warm.sender, quiet, noCatchUp) > 0);
      }
      const { forksSeen, signalsSent } = warm.totals();
      return { forks: forksSeen, sent: signalsSent, ms: performance.now() - started };
    } finally {
      if (pair !== undefined) for (const end of pair) close(end);
      warm.close();
      work = 0;
      lastHouseKeepingTick = NO_TICK;
      behind = false;
      receivesSinceProbe = 0;
    }
  };

  try {
    addToEpoll(fd, EPOLL_TAG_SOCKET);
    addToEpoll(wakeFd, EPOLL_TAG_STOP);
    if (data.relay !== undefined) {
      sender = new ForkSender(data.relay, epfd, (notice) =>
        port.postMessage({ type: 'relay', notice } satisfies ReceiveWorkerMessage),
      );
      addToEpoll(sender.doorbellFd, EPOLL_TAG_DOORBELL);
      // The fast path's blocking recv returns EAGAIN after this long without a datagram.
      setReceiveTimeout(fd, HEARTBEAT_MS);
      const report = warmUpFastPath();
      port.postMessage({
        type: 'relay',
        notice: { kind: 'warmedUp', ...report },
      } satisfies ReceiveWorkerMessage);
    }
    const probe = catchUp.probe();
    port.postMessage({ type: 'ready', catchUp: probe } satisfies ReceiveWorkerMessage);
    let lastFlushMs = 0;
    let stop = false;
    while (!stop) {
      if (
        sender !== undefined &&
        Atomics.load(control, CONTROL_FORWARD) === 0 &&
        !lossSinceLastDrain
      ) {
        // The fast path (measured with epoll_wait before every recv, as the slow path below
        // does, the worker made 3.2 system calls per fork and cost 2.5x the C relay's CPU).
        // After a loss the slow path takes over until the queue has emptied, which is when the
        // kernel stops counting drops: it posts the final count once, as without a relay.
        const got = relayUntilHouseKeeping(fd, sender, control, catchUp);
        // A quiet second: caught up long ago (a last batch of two or more left it raised).
        if (got === -Errno.EAGAIN) catchUp.lower();
        if (got === -Errno.ENOBUFS) overrun();
        if (Atomics.load(control, CONTROL_STOP) !== 0) break;
        stop = houseKeep();
        if (!stop && got === -Errno.EAGAIN) stop = waitWhileIdle(sender);
        continue;
      }
      drain();
      // The queue is empty: caught up (after a loss the slow path drains at the raised priority).
      catchUp.lower();
      if (
        sender === undefined &&
        used > 0 &&
        used < batchBytes / 4 &&
        performance.now() - lastFlushMs < COALESCE_WINDOW_MS
      ) {
        // Busy (the last batch went out under a millisecond ago): sleep one window, waking only
        // for close(), and read what arrived meanwhile, so a storm costs the main thread one
        // message per millisecond instead of one per few events. Measured on the 100,000-thread
        // storm: ~2,500 batches instead of ~70,000, a third of the CPU. A quiet machine never
        // waits: its events go out as soon as they are read.
        poll(wakeOnly, COALESCE_WINDOW_MS);
        if (wakeOnly.readInt16LE(POLLFD.REVENTS) & POLLNVAL) {
          throw new Error(`poll: the stop eventfd (fd ${wakeFd}) was closed under the worker`);
        }
        drain();
      }
      if (used > 0) lastFlushMs = performance.now();
      flush();
      if (lossSinceLastDrain) {
        // The kernel reports ENOBUFS once per congested episode, but keeps counting drops until
        // the queue empties (netlink_rcv_wake() clears NETLINK_S_CONGESTED): now it has.
        lossSinceLastDrain = false;
        const now = readSocketDrops(fd, meminfo);
        if (now !== dropped) {
          dropped = now;
          postLoss();
        }
      }
      // With a relay attached, beat at least every HEARTBEAT_MS. This path relays only while
      // the main thread wants datagrams (open(), a self-test) or after a loss, for moments: the
      // fast path's waitWhileIdle is where an idle daemon sleeps.
      const ready = epollWait(epfd, events, EPOLL_BATCH, sender === undefined ? -1 : HEARTBEAT_MS);
      sender?.beat();
      if ((handleReady(ready) & READY_STOP) !== 0) stop = true;
    }
    read(wakeFd, wakeValue);
    // close() unsubscribed before waking us: take what the kernel queued until then.
    drain();
    flush();
    dropped = readSocketDrops(fd, meminfo);
    port.postMessage({ type: 'stopped', overruns, dropped } satisfies ReceiveWorkerMessage);
  } catch (err) {
    const e = err as Error & { code?: unknown };
    port.postMessage({
      type: 'fatal',
      message: e.message,
      code: typeof e.code === 'string' ? e.code : undefined,
    } satisfies ReceiveWorkerMessage);
  } finally {
    close(epfd);
  }
}

function isReceiveWorkerData(data: unknown): data is ReceiveWorkerData {
  return (
    typeof data === 'object' &&
    data !== null &&
    (data as Partial<ReceiveWorkerData>).role === RECEIVE_WORKER_ROLE
  );
}

// Run only as the worker's entry point (compiled .js, or under jest the .ts source through
// test/support/tsWorker.ts), never when the main thread imports this module for its types.
if (parentPort !== null && isReceiveWorkerData(workerData)) {
  runReceiveLoop(workerData, parentPort);
}
