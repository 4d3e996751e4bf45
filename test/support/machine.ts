/** What the kernel says about the whole machine, for tests that need it quiet. */
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
