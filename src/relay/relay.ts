/**
 * The relay: `rfd_relay_fork_info` of the 2005 patch (kernel/relay_fork.c), fed by the proc
 * connector instead of a hook in do_fork, sending through pidfds instead of task lookups.
 *
 * Per fork, every registrant gets the signal in effect with the siginfo the patch built:
 * si_signo = signal, si_errno = 0, si_code = SI_ASYNCIO, si_pid = parent, si_value = child.
 * The per-event path allocates nothing: one 128-byte siginfo_t is reused for every send, and
 * nothing above debug is logged.
 */
import { Errno, close as closeFd, pidfdSendSignal } from '../native/libc';
import { SIGINFO, SI_ASYNCIO } from '../native/structs';
import type { ProcEvent } from '../netlink/events';
import type { Logger } from '../log';
import { isAcceptedSignal, PATCH_DEFAULT_SIGNAL } from './patchRules';
import {
  DEFAULT_FORK_TABLE_CAPACITY,
  ForkTable,
  forkSignalInfo,
  type ForkRelayLink,
  type WarmUpReport,
} from './forkTable';
import { readTaskStat } from './procStat';
import {
  USER_HZ,
  monotonicNsToStartTicks,
  planRecovery,
  scanTasksStartedSince,
  type RecoveryPlan,
} from './recovery';
import {
  Registry,
  type DeliveryCounters,
  type Registrant,
  type UnregisteredEvent,
} from './registry';

/** siginfo_t offsets and SI_ASYNCIO, defined once in src/native/structs.ts. */
export const SIGINFO_SIZE = SIGINFO.SIZE;
export const SIGINFO_SI_SIGNO = SIGINFO.SIGNO;
export const SIGINFO_SI_ERRNO = SIGINFO.ERRNO;
export const SIGINFO_SI_CODE = SIGINFO.CODE;
export const SIGINFO_SI_PID = SIGINFO.PID;
export const SIGINFO_SI_UID = SIGINFO.UID;
export const SIGINFO_SI_VALUE = SIGINFO.VALUE;
export { SI_ASYNCIO };

export interface RelayOptions {
  /** Initial signal (default 33, RELAY_FORK_SIGNAL); must satisfy 32 < n < 64. */
  signal?: number;
  /** Relay only new processes (childPid === childTgid), not new threads. */
  processesOnly?: boolean;
  /** Registrant departures not written by the user (exited, gone) are logged at info. */
  logger?: Logger;
  /**
   * Delays (ms) between re-checks of a registrant whose exit event arrived while its pidfd did
   * not yet show it exited. Bounded: after the last one a live registrant is kept.
   */
  exitRecheckDelaysMs?: readonly number[];
  /** Registrants the fast path's shared table holds (default DEFAULT_FORK_TABLE_CAPACITY). */
  capacity?: number;
}

export interface RelayCounters {
  /** Fork events handed to handleEvents (threads included, even with processesOnly). */
  forksSeen: number;
  /** Of forksSeen, the new threads (childPid !== childTgid). */
  threadsSeen: number;
  /** deliverFork calls: forks relayed to the registrants. */
  forksRelayed: number;
  /** Signals queued by the kernel, over all registrants. */
  signalsSent: number;
  /** Signals refused with EAGAIN (a registrant's queue was full): lost for that registrant. */
  signalsLost: number;
  /** Signals refused with another errno (EPERM, EINVAL...). */
  signalsFailed: number;
  /** Registrants removed because pidfd_send_signal said ESRCH (reaped). */
  registrantsGone: number;
  /** Registrants removed because they were seen to have exited. */
  registrantsExited: number;
  /** Exit events naming a registered id whose task stayed alive through every re-check. */
  staleExitEvents: number;
  /** Forks relayed late: found in /proc after the proc connector lost their events. */
  forksRecovered: number;
  /** Lost events no surviving task accounted for (an estimate from the kernel's drop count). */
  forksUnrecoverable: number;
}

/**
 * The exit event is sent after exit_notify() in do_exit (kernel/exit.c, Linux 6.x), so the task
 * already has an exit_state and the first check normally decides (on 6.18, every one of a few
 * hundred registrants' exit events found the pidfd readable); 2.6.15-era kernels sent it before
 * exit_notify. Re-checking a few times, bounded (about 1.4 s), costs nothing and keeps the relay
 * from either dropping a live registrant on a stale event or keeping a dying one for long; one
 * that outlives the re-checks is still removed by ESRCH once reaped, or by the next read of
 * `processes` (pruneExited).
 */
const DEFAULT_EXIT_RECHECK_DELAYS_MS: readonly number[] = [1, 4, 16, 64, 256, 1024];

interface PendingExitCheck {
  registrant: Registrant;
  attempt: number;
  timer: NodeJS.Timeout;
}

export class Relay {
  readonly registry: Registry;
  readonly processesOnly: boolean;
  /**
   * The fast path: the registrant set shared with the proc connector's receive worker, which
   * relays forks itself (pass `link` as ProcConnector's `relay` option). deliverFork and
   * handleEvents remain the main-thread path, for library users that feed events themselves.
   */
  private readonly table: ForkTable;
  /** Registrant of each table slot, and the slot of each registrant. */
  private readonly bySlot = new Map<number, Registrant>();
  private readonly slotOf = new Map<Registrant, number>();
  private signalInEffect: number;
  /** The patch's fixed fields set once (forkSignalInfo); the rest per fork. */
  private readonly siginfo = forkSignalInfo();
  private readonly count: RelayCounters = {
    forksSeen: 0,
    threadsSeen: 0,
    forksRelayed: 0,
    signalsSent: 0,
    signalsLost: 0,
    signalsFailed: 0,
    registrantsGone: 0,
    registrantsExited: 0,
    staleExitEvents: 0,
    forksRecovered: 0,
    forksUnrecoverable: 0,
  };
  /** Start of this relay in /proc ticks: the recovery window when no fork was received yet. */
  private readonly startTicks = readTaskStat(process.pid)?.startTime ?? 0;
  private readonly logger: Logger | undefined;
  private readonly exitRecheckDelaysMs: readonly number[];
  private readonly pendingExitChecks = new Map<number, PendingExitCheck>();
  private readonly onUnregistered = (event: UnregisteredEvent): void => {
    if (event.reason === 'written') return;
    if (event.reason === 'gone') this.count.registrantsGone++;
    else this.count.registrantsExited++;
    this.logger?.info(
      `pid ${event.id} (${event.comm}) unregistered: ${event.reason === 'gone' ? 'no longer exists' : 'exited'}` +
        ` (signals sent ${event.counters.sent}, lost ${event.counters.lost})`,
    );
  };
  private closed = false;

  constructor(options: RelayOptions = {}) {
    const signal = options.signal ?? PATCH_DEFAULT_SIGNAL;
    if (!Number.isInteger(signal) || !isAcceptedSignal(signal)) {
      throw new RangeError(`Relay: signal ${signal} is not an RT signal 33..63`);
    }
    this.signalInEffect = signal;
    this.processesOnly = options.processesOnly ?? false;
    this.table = new ForkTable(
      signal,
      this.processesOnly,
      (kind, slot) => {
        const registrant = this.bySlot.get(slot);
        if (registrant !== undefined) this.registry.remove(registrant, kind);
      },
      options.capacity ?? DEFAULT_FORK_TABLE_CAPACITY,
    );
    this.registry = new Registry({
      admit: (registrant) => {
        const slot = this.table.add(registrant.id, registrant.pidfd);
        if (slot < 0) return false;
        this.bySlot.set(slot, registrant);
        this.slotOf.set(registrant, slot);
        return true;
      },
      release: (registrant) => {
        const slot = this.slotOf.get(registrant);
        if (slot === undefined) {
          closeFd(registrant.pidfd);
          return;
        }
        // The worker's counts join the registrant's own (its 'unregistered' event reports them).
        const c = this.table.slotCounters(slot);
        registrant.counters.sent += c.sent;
        registrant.counters.lost += c.lost;
        registrant.counters.failed += c.failed;
        if (c.lastErrno !== 0) registrant.counters.lastErrno = c.lastErrno;
        this.slotOf.delete(registrant);
        this.bySlot.delete(slot);
        this.table.remove(slot, registrant.pidfd); // closes the pidfd once the worker let go
      },
    });
    this.logger = options.logger;
    this.exitRecheckDelaysMs = options.exitRecheckDelaysMs ?? DEFAULT_EXIT_RECHECK_DELAYS_MS;
    this.registry.on('unregistered', this.onUnregistered);
  }

  /** The signal in effect. */
  get signal(): number {
    return this.signalInEffect;
  }

  /** `rfd_signal_store`'s test: takes `n` only if 32 < n < 64; returns whether it was taken. */
  setSignal(n: number): boolean {
    if (!Number.isInteger(n) || !isAcceptedSignal(n)) return false;
    this.signalInEffect = n;
    this.table.setSignal(n);
    return true;
  }

  /** A registrant's delivery counters: its own (main-thread sends) plus the receive worker's. */
  countersOf(registrant: Registrant): DeliveryCounters {
    const own = registrant.counters;
    const slot = this.slotOf.get(registrant);
    if (slot === undefined) return { ...own };
    const w = this.table.slotCounters(slot);
    return {
      sent: own.sent + w.sent,
      lost: own.lost + w.lost,
      failed: own.failed + w.failed,
      lastErrno: w.lastErrno !== 0 ? w.lastErrno : own.lastErrno,
    };
  }

  /**
   * The receive worker's heartbeat (it changes at each of the worker's wake-ups; an idle worker
   * sleeps: see probeWorker) and thread id.
   */
  get worker(): { heartbeat: number; tid: number } {
    return { heartbeat: this.table.heartbeat(), tid: this.table.workerTid() };
  }

  /** Ask the receive worker for a heartbeat soon (it wakes if asleep; ForkTable.probeWorker). */
  probeWorker(): void {
    this.table.probeWorker();
  }

  /** What the receive worker's start-up warm-up relayed (see openWarmUpSender), once done. */
  get warmUp(): WarmUpReport | undefined {
    return this.table.warmUp();
  }

  /** The fast path's end for ProcConnector's `relay` option. */
  get link(): ForkRelayLink {
    return this.table;
  }

  /** The counters: the main-thread path's and the receive worker's, summed (a snapshot). */
  get counters(): Readonly<RelayCounters> {
    const t = this.table.totals();
    const c = this.count;
    return {
      ...c,
      forksSeen: c.forksSeen + t.forksSeen,
      threadsSeen: c.threadsSeen + t.threadsSeen,
      forksRelayed: c.forksRelayed + t.forksRelayed,
      signalsSent: c.signalsSent + t.signalsSent,
      signalsLost: c.signalsLost + t.signalsLost,
      signalsFailed: c.signalsFailed + t.signalsFailed,
    };
  }

  /**
   * Send the signal in effect to every registrant, newest first (the patch walked proclist from
   * its head). Returns how many registrants the kernel queued it for. EAGAIN loses that one
   * signal for that one registrant (counted); ESRCH removes the registrant ('gone'); any other
   * errno is counted. None of them stops the loop.
   */
  deliverFork(parentPid: number, childPid: number): number {
    const signal = this.signalInEffect;
    const info = this.siginfo;
    info.bytes.writeInt32LE(signal, SIGINFO_SI_SIGNO);
    info.bytes.writeInt32LE(parentPid, SIGINFO_SI_PID);
    info.bytes.writeInt32LE(childPid, SIGINFO_SI_VALUE);
    this.count.forksRelayed++;
    const list = this.registry.list;
    let queued = 0;
    for (let i = list.length - 1; i >= 0; i--) {
      const registrant = list[i];
      // A removal (ESRCH below) only shifts entries after i; guard anyway against listeners.
      if (registrant === undefined) continue;
      const errno = pidfdSendSignal(registrant.pidfd, signal, info);
      if (errno === 0) {
        registrant.counters.sent++;
        this.count.signalsSent++;
        queued++;
      } else if (errno === Errno.EAGAIN) {
        registrant.counters.lost++;
        this.count.signalsLost++;
      } else if (errno === Errno.ESRCH) {
        this.registry.remove(registrant, 'gone');
      } else {
        registrant.counters.failed++;
        registrant.counters.lastErrno = errno;
        this.count.signalsFailed++;
      }
    }
    return queued;
  }

  /**
   * Handle one batch from the proc connector.
   *
   * Fork events: the patch reported `parent->pid` with parent = current, the task calling
   * fork/clone (a thread id). The proc connector reports the new task's real_parent
   * (proc_fork_connector, drivers/connector/cn_proc.c): for a new process that is the thread
   * that called fork (copy_process sets real_parent = current), exactly the patch's value, so
   * si_pid = parentPid. For a new thread (CLONE_THREAD) real_parent is the creator's own parent,
   * i.e. the process's parent, not the creator; the connector does not say which thread created
   * it. We then report childTgid, the process the thread was created in: it is exactly the
   * patch's value when the main thread creates the thread, and names the right process
   * otherwise. (CLONE_PARENT without CLONE_THREAD also reports the caller's parent; that rare
   * case cannot be told apart and is relayed as reported.)
   *
   * Exit events: a registered id is removed only if its pidfd shows that task exited, so a stale
   * event (an earlier task with the same number) never drops a live registrant. (The daemon
   * needs no exit events: the receive worker watches the registrants' pidfds, forkTable.ts.)
   */
  handleEvents(events: readonly ProcEvent[]): void {
    for (let i = 0; i < events.length; i++) {
      const event = events[i];
      if (event.kind === 'fork') {
        this.count.forksSeen++;
        if (event.childPid === event.childTgid) {
          this.deliverFork(event.parentPid, event.childPid);
        } else {
          this.count.threadsSeen++;
          if (!this.processesOnly) this.deliverFork(event.childTgid, event.childPid);
        }
      } else if (event.kind === 'exit') {
        if (this.registry.size !== 0) this.checkExit(event.processPid);
      }
    }
  }

  /**
   * After the proc connector lost `lost` events: relay, late, a fork for every task still alive
   * that started after the last fork the receive worker read (a tick earlier: /proc start times
   * are in ticks) and that it did not read, as found in /proc (parent from /proc/<pid>/stat).
   *
   * The worker goes on reading while this runs, so a fork can be both queued and found: the
   * children are marked in shared memory before they are relayed, and the worker drops a queued
   * fork of a marked child stamped before the scan ended; a child the worker read between the
   * first look at its recent forks and the marking is caught by a second look. Fast-path
   * registrants only: forks fed through handleEvents are not tracked.
   */
  recoverLostForks(lost: number): RecoveryPlan {
    const lastNs = this.table.lastForkNs();
    const sinceTicks =
      lastNs === undefined
        ? this.startTicks
        : Math.max(0, monotonicNsToStartTicks(BigInt(Math.floor(lastNs))) - 1);
    const tasks = scanTasksStartedSince(sinceTicks);
    const scanEndNs = Number(process.hrtime.bigint());
    const windowNs = lastNs === undefined ? 0 : lastNs - 1e9 / USER_HZ;
    const plan = planRecovery(tasks, this.table.recentSince(windowNs), lost, {
      processesOnly: this.processesOnly,
      selfPid: process.pid,
    });
    this.table.markRecovered(
      plan.forks.map((f) => f.child),
      scanEndNs,
    );
    const readMeanwhile = this.table.recentSince(windowNs);
    const late = plan.forks.filter((f) => !readMeanwhile.has(f.child));
    for (const fork of late) this.deliverFork(fork.parent, fork.child);
    const recovered = { forks: late, unrecoverable: plan.unrecoverable };
    this.count.forksRecovered += late.length;
    this.count.forksUnrecoverable += plan.unrecoverable;
    return recovered;
  }

  /** Remove registrants whose tasks have exited (e.g. after the connector lost events). */
  pruneExited(): number {
    return this.registry.pruneExited();
  }

  /** Cancel exit re-checks and close every registrant's pidfd. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const pending of this.pendingExitChecks.values()) clearTimeout(pending.timer);
    this.pendingExitChecks.clear();
    this.registry.off('unregistered', this.onUnregistered);
    this.registry.close();
    this.table.close();
  }

  private checkExit(id: number): void {
    const registrant = this.registry.get(id);
    if (registrant === undefined) return;
    if (this.registry.hasExited(registrant)) {
      this.registry.remove(registrant, 'exited');
      return;
    }
    const pending = this.pendingExitChecks.get(id);
    if (pending !== undefined && pending.registrant === registrant) return;
    if (pending !== undefined) clearTimeout(pending.timer);
    this.scheduleExitCheck(registrant, 0);
  }

  private scheduleExitCheck(registrant: Registrant, attempt: number): void {
    if (attempt >= this.exitRecheckDelaysMs.length) {
      this.pendingExitChecks.delete(registrant.id);
      this.count.staleExitEvents++;
      this.logger?.debug(`exit event for registered pid ${registrant.id}, but it is alive: kept`);
      return;
    }
    const timer = setTimeout(() => {
      if (this.closed) return;
      if (this.registry.get(registrant.id) !== registrant) {
        this.pendingExitChecks.delete(registrant.id);
        return;
      }
      if (this.registry.hasExited(registrant)) {
        this.pendingExitChecks.delete(registrant.id);
        this.registry.remove(registrant, 'exited');
        return;
      }
      this.scheduleExitCheck(registrant, attempt + 1);
    }, this.exitRecheckDelaysMs[attempt]);
    timer.unref();
    this.pendingExitChecks.set(registrant.id, { registrant, attempt, timer });
  }
}
