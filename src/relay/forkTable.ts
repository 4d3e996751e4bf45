/**
 * The relay's fast path: the registrant set in shared memory, written by the main thread
 * (ForkTable) and read by the proc connector's receive worker (ForkSender), which signals the
 * registrants itself for every fork datagram it reads, with no message to the main thread and no
 * object per event.
 *
 * Shared memory (one SharedArrayBuffer):
 *   header   Int32[12]    version (a seqlock: odd while the main thread writes), acked (the
 *                         version the worker has loaded), count, signal, processesOnly,
 *                         recentNext, recoveredCount, recoveredUntil (lo, hi), heartbeat,
 *                         workerTid
 *   totals   Float64[8]   forksSeen, forksRelayed, signalsSent, signalsLost, signalsFailed,
 *                         threadsSeen
 *   slots    Int32[2c]    per slot: pidfd, id
 *   order    Int32[c]     the slots in force, newest first (the patch's proclist order)
 *   perSlot  Float64[4c]  per slot: sent, lost, failed, lastErrno
 *   recent   Int32[3r]    the last r forks the worker read: child id, timestamp lo, hi
 *   recovered Int32[q]    children a recovery relayed late (see Relay.recoverLostForks)
 * The worker is the only writer of totals and perSlot, so they are plain Float64 stores (an
 * aligned 8-byte store does not tear on x86_64 or aarch64; Atomics has no Float64, and an Int32
 * counter would wrap after 2^31 signals, days of a busy machine). Synchronisation goes through
 * the Int32 header with Atomics.
 *
 * A change (register, unregister, signal) is in effect before the write(2) that made it returns:
 * the main thread writes the slots and bumps `version` synchronously inside the FUSE request, and
 * the worker compares `version` before every send loop, so every fork datagram it reads after the
 * write sees the change. The doorbell (an eventfd in the worker's epoll set) wakes an idle worker
 * so that it also adds new registrants' pidfds to its epoll set at once; rung with no change
 * (probeWorker), it only asks the worker for a heartbeat.
 *
 * Closing a pidfd the worker may be using would let it signal whatever file the number names
 * next. So a removed registrant's pidfd (and its slot) is released only once the worker has
 * acknowledged a version without it (its 'synced' notice), or once the worker has stopped.
 *
 * Exits: the worker's epoll set holds every registrant's pidfd; a pidfd becomes readable when its
 * task exits (pidfd_poll, fs/pidfs.c, Linux 6.9+: for a PIDFD_THREAD pidfd, once the task has an
 * exit_state; exit_notify() wakes the pidfd's waiters, kernel/exit.c), so the relay needs no exit
 * events at all and pid reuse cannot fool it: the pidfd names the registered task only.
 */
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLLIN,
  Errno,
  close,
  epollCreate1,
  epollCtl,
  eventfd,
  gettid,
  SignalInfo,
  pidfdOpen,
  pidfdSendSignal,
  read,
  write,
} from '../native/libc';
import { EPOLL_EVENT, SIGINFO, SI_ASYNCIO } from '../native/structs';

/** siginfo_t fields set per fork, as Int32 indices (host-endian, as the kernel reads them). */
const I_SIGNO = SIGINFO.SIGNO >> 2;
const I_PID = SIGINFO.PID >> 2;
const I_VALUE = SIGINFO.VALUE >> 2;

const H_VERSION = 0;
const H_ACKED = 1;
const H_COUNT = 2;
const H_SIGNAL = 3;
const H_PROCESSES_ONLY = 4;
/** Forks the worker has written to the recent-forks ring, ever (the next entry is this % size). */
const H_RECENT_NEXT = 5;
/** Entries of the recovered list in force (0: none), and the scan's end (CLOCK_MONOTONIC ns). */
const H_RECOVERED_COUNT = 6;
const H_RECOVERED_UNTIL_LO = 7;
const H_RECOVERED_UNTIL_HI = 8;
/**
 * Bumped by the worker at every wake-up of its loop and at every housekeeping of its fast path
 * (every HOUSEKEEPING_MS of forks, src/netlink/receiveWorker.ts): proof of life for the watchdog,
 * which rings the doorbell (probeWorker) to get one from a worker asleep on a quiet machine.
 * Not per fork: the fast path's housekeeping already beats ten times a second under load.
 */
const H_HEARTBEAT = 9;
/** The worker's thread id (gettid), for diagnostics. */
const H_WORKER_TID = 10;
const HEADER_INTS = 12; // a multiple of 2, so the Float64 totals stay 8-aligned

const T_FORKS_SEEN = 0;
const T_FORKS_RELAYED = 1;
const T_SENT = 2;
const T_LOST = 3;
const T_FAILED = 4;
const T_THREADS_SEEN = 5;
const TOTALS = 8;

const SLOT_PIDFD = 0;
const SLOT_ID = 1;
const SLOT_INTS = 2;

const PS_SENT = 0;
const PS_LOST = 1;
const PS_FAILED = 2;
const PS_LAST_ERRNO = 3;
const PER_SLOT = 4;

/**
 * Default number of slots: far above the open-file limits a daemon usually runs with (each
 * registrant holds a pidfd), and only about 1.4 MB of mostly untouched shared memory.
 */
export const DEFAULT_FORK_TABLE_CAPACITY = 32768;

/** Tags of the worker's epoll set (epoll_event.data, low half) other than registrant slots. */
export const EPOLL_TAG_SOCKET = 0xfffffff0;
export const EPOLL_TAG_STOP = 0xfffffff1;
export const EPOLL_TAG_DOORBELL = 0xfffffff2;

/**
 * Forks remembered for recovery's dedupe: a recovery after a loss must not relay again a fork the
 * worker received (65,536 entries: more than the forks of the few seconds a loss is looked at).
 */
const RECENT_FORKS = 1 << 16;
// Declared, then exported: onFork reads it as a constant, not from this module's exports object.
export { RECENT_FORKS };
const RECENT_CHILD = 0;
const RECENT_TS_LO = 1;
const RECENT_TS_HI = 2;
const RECENT_INTS = 3;
/** The most children one recovery can mark as relayed late. */
export const RECOVERED_MAX = 1 << 15;

interface Layout {
  header: Int32Array;
  totals: Float64Array;
  slots: Int32Array;
  order: Int32Array;
  perSlot: Float64Array;
  recent: Int32Array;
  recovered: Int32Array;
}

function layout(buffer: SharedArrayBuffer, capacity: number): Layout {
  let off = 0;
  const header = new Int32Array(buffer, off, HEADER_INTS);
  off += HEADER_INTS * 4;
  const totals = new Float64Array(buffer, off, TOTALS);
  off += TOTALS * 8;
  const perSlot = new Float64Array(buffer, off, capacity * PER_SLOT);
  off += capacity * PER_SLOT * 8;
  const slots = new Int32Array(buffer, off, capacity * SLOT_INTS);
  off += capacity * SLOT_INTS * 4;
  const order = new Int32Array(buffer, off, capacity);
  off += capacity * 4;
  const recent = new Int32Array(buffer, off, RECENT_FORKS * RECENT_INTS);
  off += RECENT_FORKS * RECENT_INTS * 4;
  const recovered = new Int32Array(buffer, off, RECOVERED_MAX);
  return { header, totals, slots, order, perSlot, recent, recovered };
}

function byteLength(capacity: number): number {
  return (
    HEADER_INTS * 4 +
    TOTALS * 8 +
    capacity * (SLOT_INTS * 4 + 4 + PER_SLOT * 8) +
    RECENT_FORKS * RECENT_INTS * 4 +
    RECOVERED_MAX * 4
  );
}

const TWO_32 = 2 ** 32;

/** A timestamp (ns, as a double: exact below 2^53 ns, 104 days of uptime) from its halves. */
function joinNs(lo: number, hi: number): number {
  return (hi >>> 0) * TWO_32 + (lo >>> 0);
}

/**
 * A siginfo_t for relaying forks, with the fields the patch fixes as rfd_relay_fork_info set
 * them (si_errno 0, si_code SI_ASYNCIO) and si_uid, which the patch left uninitialised, 0: the
 * uid of the daemon that sends. si_signo, si_pid and si_value are set per fork.
 */
export function forkSignalInfo(): SignalInfo {
  const info = new SignalInfo();
  info.bytes.writeInt32LE(0, SIGINFO.ERRNO);
  info.bytes.writeInt32LE(SI_ASYNCIO, SIGINFO.CODE);
  info.bytes.writeUInt32LE(0, SIGINFO.UID);
  return info;
}

/** What the receive worker needs (structured-cloned into workerData; the buffer is shared). */
export interface ForkRelayWorkerData {
  buffer: SharedArrayBuffer;
  capacity: number;
  doorbellFd: number;
}

/** Rare notices from the worker to the table's owner. */
export type ForkRelayNotice =
  /** The worker now uses `version`: pidfds removed before it may be closed. */
  | { kind: 'synced'; version: number }
  /** The registrant in `slot` (with this pidfd) exited (its pidfd polled readable). */
  | { kind: 'exited'; slot: number; pidfd: number }
  /** pidfd_send_signal said ESRCH: the registrant in `slot` was reaped. */
  | { kind: 'gone'; slot: number; pidfd: number }
  /** The worker's start-up warm-up (openWarmUpSender) is done: what it relayed, in how long. */
  | ({ kind: 'warmedUp' } & WarmUpReport);

/** What the receive worker's warm-up did: synthetic forks relayed, sends made, wall time. */
export interface WarmUpReport {
  forks: number;
  /** Sends (signal 0, to the daemon itself) that succeeded: one per fork when all went well. */
  sent: number;
  ms: number;
}

/** How ProcConnector hands the fast path to its receive worker. */
export interface ForkRelayLink {
  /** Data for the worker (creates the doorbell on first use). */
  workerData(): ForkRelayWorkerData;
  /** The worker has started and may send from now on. */
  attached(): void;
  /** A notice posted by the worker. */
  notice(notice: ForkRelayNotice): void;
  /** The worker has stopped: nothing uses the pidfds any more. */
  detached(): void;
}

/** Totals of the fast path (all registrants). */
export interface ForkTableTotals {
  forksSeen: number;
  /** Of forksSeen, new threads. */
  threadsSeen: number;
  forksRelayed: number;
  signalsSent: number;
  signalsLost: number;
  signalsFailed: number;
}

export interface SlotCounters {
  sent: number;
  lost: number;
  failed: number;
  lastErrno: number;
}

/** The main thread's side: writes the set, releases pidfds once the worker has let go. */
export class ForkTable implements ForkRelayLink {
  readonly capacity: number;
  private readonly buffer: SharedArrayBuffer;
  private readonly mem: Layout;
  /** Slots in force, oldest first. */
  private readonly live: number[] = [];
  private readonly free: number[] = [];
  /** Removed pidfds (and their slots), released once the worker acknowledges `version`. */
  private retired: { version: number; pidfd: number; slot: number }[] = [];
  private doorbellFd = -1;
  private attachedWorker = false;
  private warmedUp: WarmUpReport | undefined;
  private closed = false;
  private readonly one = Buffer.alloc(8);

  constructor(
    signal: number,
    processesOnly: boolean,
    /** Called for the worker's 'exited' and 'gone' notices. */
    private readonly onDeparture: (
      kind: 'exited' | 'gone',
      slot: number,
      pidfd: number,
    ) => void = () => undefined,
    capacity: number = DEFAULT_FORK_TABLE_CAPACITY,
  ) {
    this.capacity = capacity;
    this.buffer = new SharedArrayBuffer(byteLength(capacity));
    this.mem = layout(this.buffer, capacity);
    Atomics.store(this.mem.header, H_SIGNAL, signal);
    Atomics.store(this.mem.header, H_PROCESSES_ONLY, processesOnly ? 1 : 0);
    for (let s = capacity - 1; s >= 0; s--) this.free.push(s);
    this.one.writeBigUInt64LE(1n);
  }

  get size(): number {
    return this.live.length;
  }

  /** Put a registrant in force (newest); returns its slot, or -1 when the table is full. */
  add(id: number, pidfd: number): number {
    if (this.closed) throw new Error('ForkTable.add: the table is closed');
    const slot = this.free.pop();
    if (slot === undefined) return -1;
    const { slots, perSlot } = this.mem;
    slots[slot * SLOT_INTS + SLOT_PIDFD] = pidfd;
    slots[slot * SLOT_INTS + SLOT_ID] = id;
    perSlot.fill(0, slot * PER_SLOT, (slot + 1) * PER_SLOT);
    this.live.push(slot);
    this.publish();
    return slot;
  }

  /**
   * Take `slot` out of force. Its pidfd is closed (and the slot reused) once the worker has
   * acknowledged the change, at once if no worker is attached.
   */
  remove(slot: number, pidfd: number): void {
    const at = this.live.lastIndexOf(slot);
    if (at < 0) return;
    this.live.splice(at, 1);
    const version = this.publish();
    this.retired.push({ version, pidfd, slot });
    if (!this.attachedWorker) this.release(Number.MAX_SAFE_INTEGER);
  }

  setSignal(signal: number): void {
    Atomics.store(this.mem.header, H_SIGNAL, signal);
    this.publish();
  }

  /** The worker's counters for one slot (valid while the slot is in force). */
  slotCounters(slot: number): SlotCounters {
    const p = this.mem.perSlot;
    const b = slot * PER_SLOT;
    return {
      sent: p[b + PS_SENT],
      lost: p[b + PS_LOST],
      failed: p[b + PS_FAILED],
      lastErrno: p[b + PS_LAST_ERRNO],
    };
  }

  totals(): ForkTableTotals {
    const t = this.mem.totals;
    return {
      forksSeen: t[T_FORKS_SEEN],
      threadsSeen: t[T_THREADS_SEEN],
      forksRelayed: t[T_FORKS_RELAYED],
      signalsSent: t[T_SENT],
      signalsLost: t[T_LOST],
      signalsFailed: t[T_FAILED],
    };
  }

  /**
   * The worker's heartbeat: it changes at every wake-up and housekeeping of the worker (ten
   * times a second while forks flow), and soon after probeWorker(); an idle worker sleeps.
   */
  heartbeat(): number {
    return Atomics.load(this.mem.header, H_HEARTBEAT);
  }

  /** The last attached worker's warm-up, once it has reported it. */
  warmUp(): WarmUpReport | undefined {
    return this.warmedUp;
  }

  /**
   * Ask the worker for a heartbeat: ring the doorbell with no change, which wakes a worker that
   * sleeps on a quiet machine (it beats at every wake-up) and is seen by a busy one at its next
   * housekeeping. A worker that does not beat soon after is stuck or stopped. No-op with no
   * worker attached.
   */
  probeWorker(): void {
    this.ringDoorbell();
  }

  /** The receive worker's thread id, once it has started (0 before). */
  workerTid(): number {
    return Atomics.load(this.mem.header, H_WORKER_TID);
  }

  /** Timestamp (CLOCK_MONOTONIC ns) of the last fork the worker read, if any. */
  lastForkNs(): number | undefined {
    const next = Atomics.load(this.mem.header, H_RECENT_NEXT);
    if (next === 0) return undefined;
    const at = ((next - 1) % RECENT_FORKS) * RECENT_INTS;
    return joinNs(this.mem.recent[at + RECENT_TS_LO], this.mem.recent[at + RECENT_TS_HI]);
  }

  /** The children of the forks the worker read stamped at or after `sinceNs` (ring permitting). */
  recentSince(sinceNs: number): Set<number> {
    const { header, recent } = this.mem;
    const next = Atomics.load(header, H_RECENT_NEXT);
    const n = Math.min(next, RECENT_FORKS);
    const set = new Set<number>();
    for (let k = 0; k < n; k++) {
      const at = ((next - 1 - k + RECENT_FORKS * 2) % RECENT_FORKS) * RECENT_INTS;
      if (joinNs(recent[at + RECENT_TS_LO], recent[at + RECENT_TS_HI]) >= sinceNs) {
        set.add(recent[at + RECENT_CHILD]);
      }
    }
    return set;
  }

  /**
   * Children a recovery relays late, whose fork events may still be queued in the socket: the
   * worker drops a fork of one of them stamped at or before `untilNs` (the scan's end) instead
   * of relaying it twice. Replaces the previous list. Returns how many were taken.
   */
  markRecovered(children: readonly number[], untilNs: number): number {
    const { header, recovered } = this.mem;
    const n = Math.min(children.length, RECOVERED_MAX);
    Atomics.store(header, H_RECOVERED_COUNT, 0);
    for (let i = 0; i < n; i++) recovered[i] = children[i];
    Atomics.store(header, H_RECOVERED_UNTIL_LO, (untilNs % TWO_32) | 0);
    Atomics.store(header, H_RECOVERED_UNTIL_HI, Math.floor(untilNs / TWO_32) | 0);
    Atomics.store(header, H_RECOVERED_COUNT, n);
    return n;
  }

  /** Stop using the table: releases now, or when the worker stops. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (let i = this.live.length - 1; i >= 0; i--) {
      this.remove(this.live[i], this.mem.slots[this.live[i] * SLOT_INTS + SLOT_PIDFD]);
    }
    if (!this.attachedWorker) this.closeDoorbell();
  }

  // ForkRelayLink

  workerData(): ForkRelayWorkerData {
    if (this.doorbellFd < 0) this.doorbellFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return { buffer: this.buffer, capacity: this.capacity, doorbellFd: this.doorbellFd };
  }

  attached(): void {
    this.attachedWorker = true;
  }

  notice(notice: ForkRelayNotice): void {
    if (notice.kind === 'synced') {
      this.release(notice.version);
      return;
    }
    if (notice.kind === 'warmedUp') {
      this.warmedUp = { forks: notice.forks, sent: notice.sent, ms: notice.ms };
      return;
    }
    // Only if that slot still holds that pidfd: the notice may cross a removal.
    const { slot, pidfd } = notice;
    if (this.live.includes(slot) && this.mem.slots[slot * SLOT_INTS + SLOT_PIDFD] === pidfd) {
      this.onDeparture(notice.kind, slot, pidfd);
    }
  }

  detached(): void {
    this.attachedWorker = false;
    this.release(Number.MAX_SAFE_INTEGER);
    if (this.closed) this.closeDoorbell();
  }

  // internals

  /** Write the order and count under the seqlock; returns the new (even) version. */
  private publish(): number {
    const { header, order } = this.mem;
    Atomics.add(header, H_VERSION, 1); // odd: being written
    const n = this.live.length;
    for (let i = 0; i < n; i++) order[i] = this.live[n - 1 - i];
    Atomics.store(header, H_COUNT, n);
    const version = Atomics.add(header, H_VERSION, 1) + 1;
    this.ringDoorbell();
    return version;
  }

  /** Wake the attached worker's epoll set (nothing to wake without one). */
  private ringDoorbell(): void {
    if (this.attachedWorker && this.doorbellFd >= 0) write(this.doorbellFd, this.one);
  }

  private release(upTo: number): void {
    if (this.retired.length === 0) return;
    const keep: typeof this.retired = [];
    for (const r of this.retired) {
      if (r.version <= upTo) {
        close(r.pidfd);
        this.free.push(r.slot);
      } else keep.push(r);
    }
    this.retired = keep;
  }

  private closeDoorbell(): void {
    if (this.doorbellFd >= 0) close(this.doorbellFd);
    this.doorbellFd = -1;
  }
}

/**
 * The worker's side. Keeps a private copy of the set (pidfds and slots, newest first) taken under
 * the seqlock whenever `version` moves, and signals from that copy; allocates nothing per event.
 */
export class ForkSender {
  private readonly mem: Layout;
  // The arrays onFork uses, held directly: one property load each per fork instead of two.
  private readonly header: Int32Array;
  private readonly recent: Int32Array;
  private readonly totals: Float64Array;
  private readonly perSlot: Float64Array;
  /** H_RECENT_NEXT: the worker is its only writer, so it keeps the value rather than reading it. */
  private recentNext: number;
  private readonly capacity: number;
  private seen = -1;
  private count = 0;
  private signal = 0;
  private processesOnly = false;
  /** The private copy: slots newest first, and their pidfds. */
  private slotsNow: Int32Array;
  private pidfdsNow: Int32Array;
  private slotsPrev: Int32Array;
  private countPrev = 0;
  /** Per slot: the pidfd in the epoll set (-1: none), and "do not send" (exited or gone). */
  private readonly watched: Int32Array;
  private readonly dead: Uint8Array;
  /** Per slot: the sync generation that last saw it in force. */
  private readonly mark: Uint32Array;
  private generation = 0;
  private readonly siginfo = forkSignalInfo();
  /** The same bytes as ints: the fields set per fork are written without Buffer's checks. */
  private readonly siginfoInts = this.siginfo.ints;
  private readonly epollEvent = Buffer.alloc(EPOLL_EVENT.SIZE);
  private readonly doorbellValue = Buffer.alloc(8);
  readonly doorbellFd: number;

  constructor(
    data: ForkRelayWorkerData,
    private readonly epfd: number,
    private readonly post: (notice: ForkRelayNotice) => void,
  ) {
    this.capacity = data.capacity;
    this.doorbellFd = data.doorbellFd;
    this.mem = layout(data.buffer, data.capacity);
    this.header = this.mem.header;
    this.recent = this.mem.recent;
    this.totals = this.mem.totals;
    this.perSlot = this.mem.perSlot;
    this.recentNext = Atomics.load(this.header, H_RECENT_NEXT);
    this.slotsNow = new Int32Array(this.capacity);
    this.pidfdsNow = new Int32Array(this.capacity);
    this.slotsPrev = new Int32Array(this.capacity);
    this.watched = new Int32Array(this.capacity).fill(-1);
    this.dead = new Uint8Array(this.capacity);
    this.mark = new Uint32Array(this.capacity);
    Atomics.store(this.mem.header, H_WORKER_TID, gettid());
    this.sync();
  }

  /** Proof of life for the watchdog: called at every wake-up and housekeeping of the worker. */
  beat(): void {
    Atomics.add(this.mem.header, H_HEARTBEAT, 1);
  }

  /**
   * The doorbell rang (reset the eventfd): take the change, if any. With none it was the
   * watchdog's probe (ForkTable.probeWorker), answered by the beat of the wake-up that read it;
   * a sync would post a needless 'synced' notice.
   */
  onDoorbell(): void {
    read(this.doorbellFd, this.doorbellValue);
    if (Atomics.load(this.header, H_VERSION) !== this.seen) this.sync();
  }

  /**
   * One fork event, as src/relay/relay.ts handleEvents relays it: a new process (childPid ===
   * childTgid) with si_pid = the parent; a new thread, unless processesOnly, with si_pid = the
   * thread's own process (childTgid). Returns how many sends it made (its share of the fast
   * path's work; see receiveWorker.ts HOUSEKEEPING_WORK).
   */
  onFork(
    parentPid: number,
    childPid: number,
    childTgid: number,
    timestampLo: number,
    timestampHi: number,
  ): number {
    const header = this.header;
    if (Atomics.load(header, H_VERSION) !== this.seen) this.sync();
    if (
      Atomics.load(header, H_RECOVERED_COUNT) !== 0 &&
      this.takeRecovered(childPid, timestampLo, timestampHi)
    ) {
      return 0; // relayed late already, by a recovery that found the task in /proc
    }
    const next = this.recentNext;
    const at = (next % RECENT_FORKS) * RECENT_INTS;
    const recent = this.recent;
    recent[at + RECENT_CHILD] = childPid;
    recent[at + RECENT_TS_LO] = timestampLo;
    recent[at + RECENT_TS_HI] = timestampHi;
    this.recentNext = next + 1 === 0x7fffffff ? RECENT_FORKS : next + 1;
    Atomics.store(header, H_RECENT_NEXT, this.recentNext);
    const totals = this.totals;
    totals[T_FORKS_SEEN]++;
    let siPid: number;
    if (childPid === childTgid) siPid = parentPid;
    else {
      totals[T_THREADS_SEEN]++;
      if (this.processesOnly) return 0;
      siPid = childTgid;
    }
    totals[T_FORKS_RELAYED]++;
    const n = this.count;
    if (n === 0) return 0;
    const signal = this.signal;
    const per = this.perSlot;
    const siginfo = this.siginfoInts;
    siginfo[I_SIGNO] = signal;
    siginfo[I_PID] = siPid;
    siginfo[I_VALUE] = childPid;
    for (let i = 0; i < n; i++) {
      const slot = this.slotsNow[i];
      if (this.dead[slot] !== 0) continue;
      const errno = pidfdSendSignal(this.pidfdsNow[i], signal, this.siginfo);
      const b = slot * PER_SLOT;
      if (errno === 0) {
        per[b + PS_SENT]++;
        totals[T_SENT]++;
      } else if (errno === Errno.EAGAIN) {
        per[b + PS_LOST]++;
        totals[T_LOST]++;
      } else if (errno === Errno.ESRCH) {
        this.dead[slot] = 1;
        this.post({ kind: 'gone', slot, pidfd: this.pidfdsNow[i] });
      } else {
        per[b + PS_FAILED]++;
        per[b + PS_LAST_ERRNO] = errno;
        totals[T_FAILED]++;
      }
    }
    return n;
  }

  /**
   * True (and the entry used up) if `child` was relayed late by a recovery whose scan ended at or
   * after this event's timestamp: the event was queued before the task was found. A linear scan,
   * only while a recovery's list is in force (rare).
   */
  private takeRecovered(child: number, lo: number, hi: number): boolean {
    const { header, recovered } = this.mem;
    const untilHi = Atomics.load(header, H_RECOVERED_UNTIL_HI) >>> 0;
    const untilLo = Atomics.load(header, H_RECOVERED_UNTIL_LO) >>> 0;
    if (hi >>> 0 > untilHi || (hi >>> 0 === untilHi && lo >>> 0 > untilLo)) return false;
    const n = Atomics.load(header, H_RECOVERED_COUNT);
    for (let i = 0; i < n; i++) {
      if (recovered[i] === child) {
        recovered[i] = 0;
        return true;
      }
    }
    return false;
  }

  /** The pidfd of `slot` polled readable: its task exited. */
  onPidfdReadable(slot: number): void {
    if (slot >= this.capacity) return;
    const pidfd = this.watched[slot];
    if (pidfd < 0) return;
    // Level-triggered and readable for good: out of the set, and no more sends to it.
    epollCtl(this.epfd, EPOLL_CTL_DEL, pidfd, null);
    this.watched[slot] = -1;
    this.dead[slot] = 1;
    this.post({ kind: 'exited', slot, pidfd });
  }

  /** Take the current set under the seqlock, update the epoll set, acknowledge the version. */
  private sync(): void {
    const { header, slots, order } = this.mem;
    // Swap the copies: the previous set is needed to find the slots that left.
    const prev = this.slotsNow;
    this.slotsNow = this.slotsPrev;
    this.slotsPrev = prev;
    this.countPrev = this.seen < 0 ? 0 : this.count;
    let version: number;
    for (;;) {
      version = Atomics.load(header, H_VERSION);
      if ((version & 1) !== 0) continue; // the main thread is writing (a few microseconds)
      const n = Atomics.load(header, H_COUNT);
      for (let i = 0; i < n; i++) {
        const slot = order[i];
        this.slotsNow[i] = slot;
        this.pidfdsNow[i] = slots[slot * SLOT_INTS + SLOT_PIDFD];
      }
      this.count = n;
      this.signal = Atomics.load(header, H_SIGNAL);
      this.processesOnly = Atomics.load(header, H_PROCESSES_ONLY) !== 0;
      if (Atomics.load(header, H_VERSION) === version) break;
    }
    // Watch the new pidfds; forget the slots that left (their pidfds close after our ack).
    const generation = (this.generation = (this.generation + 1) >>> 0);
    for (let i = 0; i < this.count; i++) {
      const slot = this.slotsNow[i];
      const pidfd = this.pidfdsNow[i];
      this.mark[slot] = generation;
      if (this.watched[slot] === pidfd || this.dead[slot] !== 0) continue;
      this.watch(slot, pidfd);
    }
    for (let i = 0; i < this.countPrev; i++) {
      const slot = this.slotsPrev[i];
      if (this.mark[slot] === generation) continue;
      if (this.watched[slot] >= 0) epollCtl(this.epfd, EPOLL_CTL_DEL, this.watched[slot], null);
      this.watched[slot] = -1;
      this.dead[slot] = 0;
    }
    this.seen = version;
    Atomics.store(header, H_ACKED, version);
    this.post({ kind: 'synced', version });
  }

  private watch(slot: number, pidfd: number): void {
    if (this.watched[slot] >= 0) epollCtl(this.epfd, EPOLL_CTL_DEL, this.watched[slot], null);
    const ev = this.epollEvent;
    ev.writeUInt32LE(EPOLLIN, EPOLL_EVENT.EVENTS);
    ev.writeUInt32LE(slot, EPOLL_EVENT.DATA);
    ev.writeUInt32LE(0, EPOLL_EVENT.DATA + 4);
    const errno = epollCtl(this.epfd, EPOLL_CTL_ADD, pidfd, ev);
    this.watched[slot] = errno === 0 ? pidfd : -1;
  }
}

/** A ForkSender that signals nobody, for warming up the fast path (see openWarmUpSender). */
export interface WarmUpSender {
  sender: ForkSender;
  /** Publish a new version of its set (the same registrant), as a registration would. */
  republish(): void;
  /** Its table's totals: what it relayed and sent. */
  totals(): ForkTableTotals;
  /** Close its pidfd, epoll set and table. Idempotent. */
  close(): void;
}

/**
 * A ForkSender over a table of its own whose one registrant is this process, signalled with 0:
 * the kernel checks the pidfd and the siginfo as for any signal and delivers nothing (signal 0,
 * kill(2); do_pidfd_send_signal(), kernel/signal.c). The receive worker relays synthetic forks
 * through it at start-up (receiveWorker.ts warmUpFastPath), so that V8 has compiled the fork
 * path with the same types and branches before the first real fork (republish() takes it
 * through a change of the set, as the first registration will), and no registrant gets a signal
 * and no counter of the daemon's own table moves.
 */
export function openWarmUpSender(): WarmUpSender {
  const table = new ForkTable(0, false, () => undefined, 1);
  let epfd = -1;
  const closeAll = (): void => {
    if (epfd >= 0) close(epfd);
    epfd = -1;
    table.close(); // closes the pidfd: no worker is attached to this table
  };
  try {
    table.add(0, pidfdOpen(process.pid, 0)); // a fresh table of one slot: always taken
    epfd = epollCreate1(EPOLL_CLOEXEC);
    return {
      sender: new ForkSender(table.workerData(), epfd, () => undefined),
      republish: () => table.setSignal(0),
      totals: () => table.totals(),
      close: closeAll,
    };
  } catch (err) {
    closeAll();
    throw err;
  }
}
