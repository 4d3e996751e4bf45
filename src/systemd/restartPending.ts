/**
 * Is the SIGTERM this service got part of a restart (`systemctl restart`, `try-restart`,
 * `reload-or-restart`) or a stop? systemd sends the same signal for both; only its job queue
 * tells them apart: during the stop half of a restart the unit's job is of type "restart" (or
 * "try-restart") until the unit is down, then it becomes a start job (systemd 252
 * src/core/job.c job_finish_and_invalidate). A crash or `kill -9` sends no SIGTERM at all; those
 * restarts (Restart=) keep the fd store by themselves.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** How long `systemctl list-jobs` may take before the answer is taken to be "a stop". */
const LIST_JOBS_TIMEOUT_MS = 3000;

/** The systemd unit this process runs in, from its cgroup (".../relayfork.service"), if any. */
export function ownUnit(cgroupText?: string): string | undefined {
  let text = cgroupText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/cgroup', 'utf8');
    } catch {
      return undefined;
    }
  }
  for (const line of text.split('\n')) {
    // cgroup v2: "0::/system.slice/relayfork.service"; v1 lines name the unit the same way.
    const unit = line.split(':').slice(2).join(':').split('/').pop();
    if (unit !== undefined && /^[\w@.\\-]+\.service$/.test(unit)) return unit;
  }
  return undefined;
}

/**
 * True when `systemctl list-jobs` output holds a restart job for `unit`. Lines are
 * "JOB UNIT TYPE STATE" (systemd 252 `--no-legend`).
 */
export function hasRestartJob(listJobsOutput: string, unit: string): boolean {
  return listJobsOutput.split('\n').some((line) => {
    const [, jobUnit, type] = line.trim().split(/\s+/);
    return jobUnit === unit && (type === 'restart' || type === 'try-restart');
  });
}

/**
 * Ask systemd whether `unit` is being restarted. Any failure (no systemctl, no manager, a
 * timeout) answers false: the daemon then stops as for `systemctl stop`, which is always safe.
 */
export function restartPending(unit: string, systemctl = 'systemctl'): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(
      systemctl,
      ['list-jobs', '--no-legend', '--no-pager', '--full', '--plain'],
      { timeout: LIST_JOBS_TIMEOUT_MS },
      (err, stdout) => resolve(err === null && hasRestartJob(stdout, unit)),
    );
  });
}
