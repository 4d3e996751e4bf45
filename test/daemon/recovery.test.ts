/**
 * Lost forks are found again (issue 9 §2): the daemon's reader is paused (SIGSTOP) with a small
 * receive buffer, a thread storm overflows it, then a known forker makes children that stay
 * alive; once the daemon runs again it sees the overrun, scans /proc and relays a late fork for
 * every surviving child, each exactly once.
 */
import { TempDir, compileFixture, parseSignals, spawnChild, waitFor, cleanupAll } from '../support';
import { Daemon, RELAY_SIGNAL, consumerArgs, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;
let daemon: Daemon | undefined;
/** The forker's sleepers, in its process group: cleanup ends them with it. */
let sleepers: number[] = [];

beforeAll(() => {
  tmp = new TempDir();
});

afterAll(async () => {
  if (daemon?.running) process.kill(daemon.pid, 'SIGCONT');
  await cleanupAll();
});

test('every surviving child of a forker whose forks were lost is relayed late, once', async () => {
  const [consumerBin, threadsBin] = await Promise.all([
    compileFixture('rt_consumer', tmp.path),
    compileFixture('threads', tmp.path),
  ]);
  const d = await Daemon.start(tmp.join('mnt'), [
    '--signal',
    String(RELAY_SIGNAL),
    '--receive-buffer',
    '65536',
  ]);
  daemon = d;
  const consumer = spawnChild(consumerBin, consumerArgs(d.file('processes')));
  await consumer.waitForLine(/^ready$/, 'stdout').catch((err: Error) => {
    throw new Error(`${err.message}\ndaemon:\n${d.output()}`);
  });

  process.kill(d.pid, 'SIGSTOP');
  try {
    // 3,000 threads: 6,000 events against a buffer that holds about 160.
    const storm = spawnChild(threadsBin, ['3000', 'quiet']);
    await storm.exited;
    // The known forker: a shell that starts 20 sleepers (ignoring the relay signal) and waits.
    const forker = spawnChild(
      'sh',
      ['-c', 'trap "" 40; for i in $(seq 20); do sleep 1000 >/dev/null & echo $!; done; wait'],
      { group: true },
    );
    await waitFor('the 20 sleepers', () => (forker.stdout.length >= 20 ? true : undefined));
    sleepers = forker.stdout.slice(0, 20).map(Number);
    process.kill(d.pid, 'SIGCONT');

    await d.waitForLine(/recovered \d+ lost forks/, 'stderr', 20000);
    const got = await waitFor('a signal for every sleeper', () => {
      const signals = parseSignals(consumer.stdout);
      return sleepers.every((pid) => signals.some((s) => s.val === pid)) ? signals : undefined;
    });
    for (const pid of sleepers) {
      const forThis = got.filter((s) => s.val === pid);
      expect(forThis).toHaveLength(1);
      expect(forThis[0].pid).toBe(forker.pid); // the parent, from /proc/<pid>/stat
    }
    expect(d.stderr.some((l) => /the proc connector socket overflowed/.test(l))).toBe(true);
    expect(d.stat('netlink_overruns')).toBeGreaterThan(0);
    expect(d.stat('forks_recovered')).toBeGreaterThanOrEqual(20);
    expect(d.stat('forks_unrecoverable')).toBeGreaterThan(0); // the storm's threads, gone
  } finally {
    process.kill(d.pid, 'SIGCONT');
  }
});
