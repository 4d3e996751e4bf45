/** What the kernel says about the whole machine and its tasks, for tests that need it quiet. */
import fs from 'node:fs';

/**
 * Tasks created since boot (/proc/stat "processes": every fork and clone, threads included,
 * counted in copy_process(), kernel/fork.c). It stays put only while nothing on the machine forks.
 */
export function forksSinceBoot(): number {
  const match = /^processes (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'utf8'));
  if (match === null) throw new Error('/proc/stat has no "processes" line');
  return Number(match[1]);
}

/**
 * How often task `tid` of process `pid` has been given a CPU (/proc/<pid>/task/<tid>/schedstat,
 * third field): it stays put only while the task sleeps. `tid` defaults to the main thread.
 */
export function schedulerRuns(pid: number, tid = pid): number {
  return Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').trim().split(' ')[2]);
}
