/**
 * The relay: `rfd_relay_fork_info` of the 2005 patch (kernel/relay_fork.c), fed by the proc
 * connector instead of a hook in do_fork, sending through pidfds instead of task lookups.
 *
 * Per fork, every registrant gets the signal in effect with the siginfo the patch built:
 * si_signo = signal, si_errno = 0, si_code = SI_ASYNCIO, si_pid = parent, si_value = child.
 * The per-event path allocates nothing: one 128-byte siginfo_t is reused for every send, and
 * nothing above debug is logged.
 */
import { Errno, pidfdSendSignal } from '../native/libc';
import type { ProcEvent } from '../netlink/events';
import type { Logger } from '../log';
import { isAcceptedSignal, PATCH_DEFAULT_SIGNAL } from './patchRules';
import {
  RecentForks,
  USER_HZ,
  monotonicNsToStartTicks,
  planRecovery,
  scanTasksStartedSince,
  type RecoveryPlan,
} from './recovery';
import { readTaskStat } from './procStat';
import { Registry, type Registrant, type UnregisteredEvent } from './registry';

/**
 * siginfo_t on x86_64 (include/uapi/asm-generic/siginfo.h, Linux 6.x; no __ARCH_HAS_SWAPPED_SIGINFO
 * on x86): three ints, then `union __sifields`, 8-byte aligned because it holds pointers, so it
 * starts at 16; the whole struct is padded to SI_MAX_SIZE. For SI_ASYNCIO the kernel and the
 * receiver read the `_rt` member: _pid, _uid, then the sigval_t (union of int and pointer, so
 * 8-aligned at 24). Checked against `offsetof` with the system's glibc headers.
 */
export const SIGINFO_SIZE = 128; // SI_MAX_SIZE
export const SIGINFO_SI_SIGNO = 0;
export const SIGINFO_SI_ERRNO = 4;
export const SIGINFO_SI_CODE = 8;
export const SIGINFO_SI_PID = 16; // _sifields._rt._pid
export const SIGINFO_SI_UID = 20; // _sifields._rt._uid
export const SIGINFO_SI_VALUE = 24; // _sifields._rt._sigval.sival_int

/**
 * SI_ASYNCIO (include/uapi/asm-generic/siginfo.h): "sent by AIO completion", the code the patch
 * used. Being negative, pidfd_send_signal lets a sender other than the target set it (it refuses
 * si_code >= 0 and SI_TKILL, kernel/signal.c).
 */
export const SI_ASYNCIO = -4;

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
  readonly registry = new Registry();
  readonly processesOnly: boolean;
  private signalInEffect: number;
  private readonly siginfo = Buffer.alloc(SIGINFO_SIZE);
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
  /** Forks received lately, so that a recovery does not relay them twice. */
  private readonly recentForks = new RecentForks();
  /** Timestamp (CLOCK_MONOTONIC ns) of the last fork event received. */
  private lastForkNs: bigint | undefined;
  /**
   * Children a recovery relayed, and when its scan ended: a fork event for one of them stamped
   * before then was still queued in the socket and is not relayed again.
   */
  private recovered = new Set<number>();
  private recoveredUntilNs = 0n;
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
    this.logger = options.logger;
    this.exitRecheckDelaysMs = options.exitRecheckDelaysMs ?? DEFAULT_EXIT_RECHECK_DELAYS_MS;
    // Fixed fields of the siginfo, as rfd_relay_fork_info set them; si_uid (left uninitialised
    // by the patch) is 0, the uid of the daemon that sends.
    this.siginfo.writeInt32LE(0, SIGINFO_SI_ERRNO);
    this.siginfo.writeInt32LE(SI_ASYNCIO, SIGINFO_SI_CODE);
    this.siginfo.writeUInt32LE(0, SIGINFO_SI_UID);
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
    return true;
  }

  /** The counters, live (read them, copy them to keep a snapshot). */
  get counters(): Readonly<RelayCounters> {
    return this.count;
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
    info.writeInt32LE(signal, SIGINFO_SI_SIGNO);
    info.writeInt32LE(parentPid, SIGINFO_SI_PID);
    info.writeInt32LE(childPid, SIGINFO_SI_VALUE);
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
   * event (an earlier task with the same number) never drops a live registrant.
   */
  handleEvents(events: readonly ProcEvent[]): void {
    for (let i = 0; i < events.length; i++) {
      const event = events[i];
      if (event.kind === 'fork') {
        if (
          this.recovered.size !== 0 &&
          event.timestampNs <= this.recoveredUntilNs &&
          this.recovered.delete(event.childPid)
        ) {
          continue; // relayed already, late, by recoverLostForks
        }
        this.recentForks.add(event.childPid, event.timestampNs);
        this.lastForkNs = event.timestampNs;
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
   * that started after the last fork received (a tick earlier: start times are in ticks) and was
   * not received, as found in /proc (parent from /proc/<pid>/stat). Returns the plan carried out.
   */
  recoverLostForks(lost: number): RecoveryPlan {
    const sinceNs = this.lastForkNs;
    const sinceTicks =
      sinceNs === undefined ? this.startTicks : Math.max(0, monotonicNsToStartTicks(sinceNs) - 1);
    const tasks = scanTasksStartedSince(sinceTicks);
    const scanEndNs = process.hrtime.bigint();
    const received = this.recentForks.since(
      sinceNs === undefined ? 0n : sinceNs - BigInt(1e9 / USER_HZ),
    );
    const plan = planRecovery(tasks, received, lost, {
      processesOnly: this.processesOnly,
      selfPid: process.pid,
    });
    if (this.recoveredUntilNs < scanEndNs - 10_000_000_000n) this.recovered.clear();
    for (const fork of plan.forks) {
      this.deliverFork(fork.parent, fork.child);
      this.recovered.add(fork.child);
    }
    this.recoveredUntilNs = scanEndNs;
    this.count.forksRecovered += plan.forks.length;
    this.count.forksUnrecoverable += plan.unrecoverable;
    return plan;
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
