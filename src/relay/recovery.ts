/**
 * Forks found again after the proc connector lost events (issue 9 §2).
 *
 * Netlink multicast cannot be made lossless: when the socket overflows (ENOBUFS) the kernel drops
 * the events it could not queue. Every task that a lost fork made and that is still alive is in
 * /proc, with its start time (/proc/<pid>/task/<tid>/stat field 22): a scan for tasks that
 * started after the last fork received before the loss, minus the forks that did arrive, gives
 * the forks to relay late. Tasks born and gone inside the gap cannot be found: they are only
 * counted, from the kernel's drop count.
 */
import fs from 'node:fs';
import { parseTaskStat } from './procStat';

/** USER_HZ: the unit of /proc start times (clock ticks a second; 100 on every Linux ABI). */
export const USER_HZ = 100;
const NS_PER_TICK = 1_000_000_000n / BigInt(USER_HZ);

/** A task found in /proc. */
export interface FoundTask {
  tid: number;
  /** The process it belongs to (its thread group). */
  tgid: number;
  /** The parent process (field 4). */
  parentPid: number;
  /** Start time in USER_HZ ticks since boot. */
  startTime: number;
}

/**
 * Every task, threads included, whose start time is at least `sinceTicks`. Tasks that vanish
 * during the scan are skipped (they are gone: nobody can be told about them usefully).
 */
export function scanTasksStartedSince(sinceTicks: number, procRoot = '/proc'): FoundTask[] {
  const found: FoundTask[] = [];
  let pids: string[];
  try {
    pids = fs.readdirSync(procRoot);
  } catch {
    return found;
  }
  for (const pidName of pids) {
    if (!/^\d+$/.test(pidName)) continue;
    const tgid = Number(pidName);
    let tids: string[];
    try {
      tids = fs.readdirSync(`${procRoot}/${pidName}/task`);
    } catch {
      continue; // exited meanwhile
    }
    for (const tidName of tids) {
      const tid = Number(tidName);
      let text: string;
      try {
        text = fs.readFileSync(`${procRoot}/${pidName}/task/${tidName}/stat`, 'latin1');
      } catch {
        continue;
      }
      const stat = parseTaskStat(tid, text);
      if (stat === undefined || stat.startTime < sinceTicks) continue;
      if (stat.state === 'Z' || stat.state === 'X') continue;
      found.push({ tid, tgid, parentPid: stat.parentPid, startTime: stat.startTime });
    }
  }
  return found;
}

/**
 * The /proc start time (ticks of CLOCK_BOOTTIME) of an instant the proc connector stamped with
 * ktime_get_ns() (CLOCK_MONOTONIC; proc_fork_connector, drivers/connector/cn_proc.c). The two
 * clocks differ by the time spent suspended; the offset is measured now from /proc/uptime
 * (CLOCK_BOOTTIME, 10 ms resolution) and process.hrtime (CLOCK_MONOTONIC). Start times have a
 * resolution of one tick anyway; callers widen the window by a tick and dedupe.
 */
export function monotonicNsToStartTicks(monotonicNs: bigint): number {
  const uptimeSeconds = fs.readFileSync('/proc/uptime', 'latin1').split(' ')[0];
  const [whole, fraction = '0'] = uptimeSeconds.split('.');
  const boottimeNs = BigInt(whole) * 1_000_000_000n + BigInt(fraction.padEnd(9, '0').slice(0, 9));
  const offsetNs = boottimeNs - process.hrtime.bigint();
  const ticks = (monotonicNs + (offsetNs > 0n ? offsetNs : 0n)) / NS_PER_TICK;
  return Number(ticks);
}

export interface RecoveryPlan {
  /** Forks to relay late, oldest first: [si_pid, child] as the relay sends them. */
  forks: Array<{ parent: number; child: number; task: FoundTask }>;
  /** Lost events that no surviving task accounts for (an estimate). */
  unrecoverable: number;
}

/**
 * Which tasks found after a loss to relay: those not received already (`received`), not the
 * daemon's own threads, threads only when `processesOnly` is off; si_pid as the relay chooses it
 * (a new process: its parent; a new thread: its own process). `lost` is the kernel's count of
 * events dropped in this episode; what the tasks found do not account for is unrecoverable.
 */
export function planRecovery(
  tasks: readonly FoundTask[],
  received: ReadonlySet<number>,
  lost: number,
  options: { processesOnly: boolean; selfPid: number },
): RecoveryPlan {
  const forks: RecoveryPlan['forks'] = [];
  let missed = 0;
  const sorted = [...tasks].sort((a, b) => a.startTime - b.startTime || a.tid - b.tid);
  for (const task of sorted) {
    if (received.has(task.tid) || task.tgid === options.selfPid) continue;
    missed++;
    const isThread = task.tid !== task.tgid;
    if (isThread && options.processesOnly) continue;
    forks.push({ parent: isThread ? task.tgid : task.parentPid, child: task.tid, task });
  }
  return { forks, unrecoverable: Math.max(0, lost - missed) };
}
