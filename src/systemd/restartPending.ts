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

/**
 * How long one `systemctl list-jobs` may take, and how many times it is asked. A loaded machine
 * can make one call slow or fail; two tries of 4 s stay well inside the shipped unit's
 * TimeoutStopSec=15s, which must also cover the unmount.
 */
const LIST_JOBS_TIMEOUT_MS = 4000;
const LIST_JOBS_TRIES = 2;

/** systemd's answer, and when it is "no", why: the daemon logs it before it unmounts. */
export type RestartCheck = { restarting: true } | { restarting: false; why: string };

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
 * Ask systemd whether `unit` is being restarted. A failed call (a timeout, a busy manager) is
 * tried again once; if systemd cannot be asked at all (no systemctl, no manager) the answer is
 * "no": the daemon then stops as for `systemctl stop`, which is always safe.
 */
export async function restartPending(unit: string, systemctl = 'systemctl'): Promise<RestartCheck> {
  let problem = '';
  for (let attempt = 1; attempt <= LIST_JOBS_TRIES; attempt++) {
    const answer = await listJobs(systemctl);
    if (answer.ok) {
      return hasRestartJob(answer.stdout, unit)
        ? { restarting: true }
        : { restarting: false, why: `systemd has no restart job queued for ${unit}` };
    }
    problem = answer.problem;
  }
  return {
    restarting: false,
    why: `systemctl list-jobs failed ${LIST_JOBS_TRIES} times, last: ${problem}`,
  };
}

function listJobs(
  systemctl: string,
): Promise<{ ok: true; stdout: string } | { ok: false; problem: string }> {
  return new Promise((resolve) => {
    execFile(
      systemctl,
      ['list-jobs', '--no-legend', '--no-pager', '--full', '--plain'],
      { timeout: LIST_JOBS_TIMEOUT_MS },
      (err, stdout, stderr) => {
        if (err === null) return resolve({ ok: true, stdout });
        const detail = stderr.trim().split('\n')[0] ?? '';
        const how = err.killed
          ? `no answer within ${LIST_JOBS_TIMEOUT_MS} ms`
          : err.message.split('\n')[0];
        resolve({ ok: false, problem: detail === '' ? how : `${how}: ${detail}` });
      },
    );
  });
}
