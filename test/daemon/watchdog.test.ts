/**
 * WATCHDOG=1 vouches for health, not for a turning event loop (issue 10): with the receive
 * worker's thread stopped (ptrace stops that one thread; the rest of the daemon runs on, its
 * files answer), the pings stop and the log says why; once the thread runs again they resume.
 * An idle worker, which sleeps until something happens, is not taken for a stalled one.
 */
import fs from 'node:fs';
import { NotifyListener } from '../deploy/notifyListener';
import {
  Child,
  TempDir,
  cleanupAll,
  compileFixture,
  forksSinceBoot,
  isMounted,
  spawnChild,
  waitFor,
  waitForStill,
} from '../support';
import { Daemon, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;
let listener: NotifyListener | undefined;
let daemon: Daemon | undefined;
let stall: Child | undefined;

beforeAll(() => {
  tmp = new TempDir();
});

afterAll(async () => {
  if (stall) await stall.stop('SIGKILL'); // ptrace detaches when the tracer dies
  listener?.close();
  await cleanupAll();
});

/** The longest gap between WATCHDOG=1 pings from `since` until now (ms). */
function longestGap(messages: { at: number }[], since: number, until: number): number {
  let last = since;
  let worst = 0;
  for (const m of messages) {
    if (m.at < since) continue;
    worst = Math.max(worst, m.at - last);
    last = m.at;
  }
  return Math.max(worst, until - last);
}

test('a stalled receive worker stops the pings; they come back when it runs again', async () => {
  const stallBin = await compileFixture('stall_thread', tmp.path);
  listener = new NotifyListener(tmp.join('notify.sock'));
  const mountpoint = tmp.join('mnt');
  daemon = new Daemon(mountpoint, ['--no-state', '--signal', '40', '--log-level', 'debug'], [], {
    ...process.env,
    NOTIFY_SOCKET: listener.address,
    WATCHDOG_USEC: '2000000',
  });
  await listener.waitForMessages('READY', 1, 30000);
  const tid = Number(
    /thread (\d+)/.exec(
      await daemon.waitForLine(/the receive worker is thread \d+/, 'stderr'),
    )?.[1],
  );
  expect(fs.existsSync(`/proc/${daemon.pid}/task/${tid}`)).toBe(true);
  // Healthy: a ping every second (half of WatchdogSec=2s).
  await listener.waitForMessages('WATCHDOG', 3, 10000);

  // Idle, the worker sleeps (no receive timeout wakes it): each check asks it for a heartbeat,
  // so a spell with no fork anywhere on the machine, longer than the 3 s stall limit, still
  // gets every ping.
  const quietSince = await waitForStill('the forks on the machine', forksSinceBoot, 4500, 45000);
  expect(daemon.stderr.filter((l) => /not pinging/.test(l))).toEqual([]);
  expect(longestGap(listener.with('WATCHDOG'), quietSince, Date.now())).toBeLessThan(2000);

  stall = spawnChild(stallBin, [String(tid), '8']);
  await stall.waitForLine(/^stopped$/, 'stdout');
  const stalledAt = Date.now();
  await daemon.waitForLine(/watchdog: not pinging systemd: the receive worker/, 'stderr', 10000);
  const pingsBefore = listener.with('WATCHDOG').length;
  await new Promise((r) => setTimeout(r, 2500));
  // The rest of the daemon runs: its files answer, yet no ping was sent meanwhile.
  expect(fs.readFileSync(`${mountpoint}/signal`, 'utf8')).toBe('40\n');
  expect(listener.with('WATCHDOG').length).toBe(pingsBefore);
  expect(longestGap(listener.with('WATCHDOG'), stalledAt, Date.now())).toBeGreaterThan(3000);

  await stall.waitForLine(/^resumed$/, 'stdout', 20000);
  await daemon.waitForLine(/watchdog: healthy again/, 'stderr', 10000);
  await waitFor('pings again', () => listener!.with('WATCHDOG').length >= pingsBefore + 2);
  const { code } = await daemon.stop('SIGTERM');
  expect(code).toBe(0);
  expect(isMounted(mountpoint)).toBe(false);
}, 90000);
