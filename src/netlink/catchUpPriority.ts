/**
 * The receive worker's priority while its fast path is behind the kernel.
 *
 * The 2005 patch sent its signals inside fork() itself: whoever forked paid for them, at once.
 * A relay in user space runs beside the forking tasks, at the same priority, and on a saturated
 * machine it gets the same share of the CPU as each of them: a storm that makes events faster
 * than that share relays them leaves a backlog in the socket. Measured (Node 20, Linux 6.18.44,
 * 2 cores, 100,000 thread creations, 10 registrants, each at nice 0): the median signal came
 * 0.3-2.0 s after its thread (C relay) and 0.5-2.8 s (relayfork), in which a longer storm fills
 * the 32 MiB receive buffer and events are lost. With the receive worker at nice -10 while it is
 * behind: 1.5-2.1 ms, p99 6-12 ms, and no more CPU per event. A relay that keeps up gains nothing
 * from a higher priority and would only preempt the forking tasks more often (a process storm, 1
 * registrant: its wall time +4% with the worker at nice -10 throughout), so the worker is raised
 * only while it is behind and back to its own nice value as soon as it has caught up. Precedent:
 * auditd's priority_boost, forkstat's -r.
 *
 * Behind means a recvmmsg of the fast path found a full batch (RECEIVE_SLOTS datagrams or more
 * were queued); caught up means one found at most one, or the socket was found empty (a quiet
 * second in the fast path, a drain to EAGAIN in the slow path). Nothing is added per fork: the
 * fast path looks once per recvmmsg, which it makes once in 16 receives while it keeps up.
 */

import os from 'node:os';

/** Sets thread `tid`'s nice value; returns undefined, or the error's code (EACCES...). */
export type SetThreadNice = (tid: number, nice: number) => string | undefined;

/**
 * setpriority(2) through Node's os.setPriority (PRIO_PROCESS, which on Linux names one thread by
 * its id: threads do not share a nice value, setpriority(2) NOTES). EACCES below the thread's
 * own nice value without CAP_SYS_NICE (or RLIMIT_NICE room).
 */
export function setThreadNice(tid: number, nice: number): string | undefined {
  try {
    os.setPriority(tid, nice);
    return undefined;
  } catch (err) {
    // A SystemError: its code is ERR_SYSTEM_ERROR, the call's is in info.
    const e = err as { info?: { code?: unknown }; code?: unknown };
    const code = e.info?.code ?? e.code;
    return typeof code === 'string' ? code : String(err);
  }
}

/** Thread `tid`'s nice value (getpriority(2), os.getPriority). */
export function threadNice(tid: number): number {
  return os.getPriority(tid);
}

/**
 * The daemon's default (--catch-up-nice): strong enough, measured, for the worker to keep up with
 * a 100,000-thread storm relayed to 10 registrants on 2 cores (at -5 the p99 was still 0.14 s).
 */
export const DEFAULT_CATCH_UP_NICE = -10;

/** The nice values that setpriority(2) takes. */
export const NICE_MIN = -20;
export const NICE_MAX = 19;

/** What the worker found when it tried its catch-up priority at start (probe()). */
export type CatchUpProbe =
  /** Raising works: the worker will run at `nice` while behind. */
  | { kind: 'ready'; nice: number; base: number }
  /** Not asked for, or not above the thread's own priority: nothing to do. */
  | { kind: 'off'; base: number }
  /** setpriority refused (EACCES: no CAP_SYS_NICE): the worker catches up at its own priority. */
  | { kind: 'refused'; nice: number; base: number; code: string };

export class CatchUpPriority {
  private raised = false;
  private enabled: boolean;

  /**
   * `nice`: the worker's nice value while behind, or undefined for none; `base`: the thread's
   * own; `fullBatch`: a recvmmsg that reads this many or more means behind; `raises`: its first
   * element counts the raises (a view of shared memory, for the main thread to read).
   */
  constructor(
    private readonly tid: number,
    private readonly nice: number | undefined,
    private readonly base: number,
    private readonly fullBatch: number,
    private readonly setNice: SetThreadNice,
    private readonly raises: Int32Array = new Int32Array(1),
  ) {
    this.enabled = nice !== undefined && nice < base;
  }

  /** How many times the worker was raised: the episodes in which it was behind. */
  get catchUps(): number {
    return Atomics.load(this.raises, 0);
  }

  /** Whether the thread runs at the catch-up priority now. */
  get isRaised(): boolean {
    return this.raised;
  }

  /**
   * Raise and lower once, at start, to learn whether raising works (it needs CAP_SYS_NICE); a
   * refusal turns catching up off, so the fast path never retries a call that fails.
   */
  probe(): CatchUpProbe {
    const { nice, base } = this;
    if (nice === undefined || !this.enabled) return { kind: 'off', base };
    const code = this.setNice(this.tid, nice);
    if (code !== undefined) {
      this.enabled = false;
      return { kind: 'refused', nice, base, code };
    }
    this.setNice(this.tid, base);
    return { kind: 'ready', nice, base };
  }

  /** After a recvmmsg of the fast path that read `got` datagrams (or -errno). */
  afterBatch(got: number): void {
    if (got >= this.fullBatch) this.raise();
    else if (got >= 0 && got <= 1) this.lower();
  }

  /** Back to the thread's own nice value, if raised. */
  lower(): void {
    if (!this.raised) return;
    this.raised = false;
    this.setNice(this.tid, this.base);
  }

  private raise(): void {
    if (this.raised || !this.enabled) return;
    // The nice value passed, not an increment: a raise cannot stack, and lower() restores the
    // thread's own exactly. A refusal now (the capability dropped since probe()) ends raising.
    if (this.setNice(this.tid, this.nice as number) !== undefined) {
      this.enabled = false;
      return;
    }
    this.raised = true;
    Atomics.add(this.raises, 0, 1);
  }
}
