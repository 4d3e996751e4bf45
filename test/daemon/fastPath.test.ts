/**
 * The daemon's fast path as a user sees it (issue 7): a registration is in effect before the
 * write(2) that made it returns, and registrants that are threads leave `processes` when they
 * exit although the daemon subscribes to fork events only (their pidfds tell it).
 */
import { TempDir, compileFixture, spawnChild, cleanupAll } from '../support';
import { Daemon, RELAY_SIGNAL, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;
let daemon: Daemon;
let registerForkBin: string;
let threadBin: string;

beforeAll(async () => {
  tmp = new TempDir();
  [registerForkBin, threadBin] = await Promise.all([
    compileFixture('register_fork', tmp.path),
    compileFixture('registered_thread', tmp.path),
  ]);
  daemon = await Daemon.start(tmp.join('mnt'));
});

afterAll(cleanupAll);

test('a fork made right after registering is relayed: the registration was in effect', async () => {
  // Each round registers, forks at once, waits for that fork's signal, unregisters.
  const c = spawnChild(registerForkBin, [daemon.file('processes'), '200', String(RELAY_SIGNAL)]);
  const { code } = await c.exited;
  expect(c.output()).toContain('ok 200');
  expect(code).toBe(0);
  expect(daemon.listed()).not.toContain(c.pid);
});

test('a registered thread\u2019s exit is noticed without reading processes', async () => {
  // The daemon logs registrants that exit; no read of processes may do the pruning here. Seen
  // on its pidfd ('exited'), or, when a fork's signal reaches the dead thread first, by the
  // send's ESRCH ('no longer exists').
  const c = spawnChild(threadBin, [daemon.file('processes')], { stdin: 'pipe' });
  const line = await c.waitForLine(/^tid \d+$/, 'stdout');
  const tid = Number(line.split(' ')[1]);
  c.proc.stdin?.write('exit\n');
  await c.waitForLine(/^thread gone$/, 'stdout');
  await daemon.waitForLine(
    new RegExp(`pid ${tid} \\(.*\\) unregistered: (exited|no longer exists)`),
    'stderr',
  );
  expect(c.running).toBe(true);
  expect(daemon.listed()).not.toContain(tid);
  c.proc.stdin?.end();
  await c.exited;
});

test('a registered main thread that exits first leaves once its whole process has exited', async () => {
  // A PIDFD_THREAD pidfd of a thread-group leader that exited while other threads run does not
  // poll readable (measured on Linux 6.18: the leader is a zombie, wait(2)-like semantics), as
  // the exit-event design also kept it (its re-checks found it alive); it goes with the process.
  const c = spawnChild(threadBin, [daemon.file('processes'), '--leader'], { stdin: 'pipe' });
  const line = await c.waitForLine(/^tid \d+$/, 'stdout');
  const tid = Number(line.split(' ')[1]);
  expect(tid).toBe(c.pid);
  c.proc.stdin?.write('exit\n'); // ends the main thread (pthread_exit); the other one says so
  await c.waitForLine(/^leader gone$/, 'stdout');
  c.proc.stdin?.end(); // ends the process
  await c.exited;
  await daemon.waitForLine(
    new RegExp(`pid ${tid} \\(.*\\) unregistered: (exited|no longer exists)`),
    'stderr',
  );
});
