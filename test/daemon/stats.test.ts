/**
 * The `stats` file (issue 9 §3) through the daemon's mount: stable names in order, counters that
 * match what a registrant received, read-only even for root, and logged at shutdown.
 */
import fs from 'node:fs';
import { STATS_NAMES } from '../../src/relay/stats';
import {
  TempDir,
  compileFixture,
  parseSignals,
  spawnChild,
  waitFor,
  cleanupAll,
  runForker,
} from '../support';
import { Daemon, consumerArgs, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;

beforeAll(() => {
  tmp = new TempDir();
});

afterAll(cleanupAll);

function readStats(mountpoint: string): Map<string, number> {
  const stats = new Map<string, number>();
  for (const line of fs.readFileSync(`${mountpoint}/stats`, 'utf8').split('\n')) {
    if (line === '') continue;
    const m = /^([a-z_.0-9]+) (\d+)$/.exec(line);
    if (!m) throw new Error(`not a "name value" line: ${JSON.stringify(line)}`);
    stats.set(m[1], Number(m[2]));
  }
  return stats;
}

test('stats counts what happened, per daemon and per registrant', async () => {
  const [consumerBin, forkerBin] = await Promise.all([
    compileFixture('rt_consumer', tmp.path),
    compileFixture('forker', tmp.path),
  ]);
  const d = await Daemon.start(tmp.join('mnt'));
  expect(fs.readdirSync(d.mountpoint).sort()).toEqual(['processes', 'signal', 'stats']);
  expect(fs.statSync(`${d.mountpoint}/stats`).mode & 0o777).toBe(0o444);

  const initial = readStats(d.mountpoint);
  expect([...initial.keys()]).toEqual(STATS_NAMES);
  expect(initial.get('registrants')).toBe(0);

  const consumer = spawnChild(consumerBin, consumerArgs(d.file('processes')));
  await consumer.waitForLine(/^ready$/, 'stdout');
  const forks = await runForker(forkerBin, 4, 2);
  await waitFor('the forks to arrive', () =>
    forks.every(([, c]) => parseSignals(consumer.stdout).some((s) => s.val === c)),
  );

  const stats = readStats(d.mountpoint);
  const received = parseSignals(consumer.stdout).length;
  expect(stats.get('registrants')).toBe(1);
  expect(stats.get('registrants_ever')).toBe(1);
  expect(stats.get('state_file_writes')).toBe(2); // at start, and the registration
  expect(stats.get(`registrant.${consumer.pid}.signals_sent`)).toBeGreaterThanOrEqual(received);
  expect(stats.get(`registrant.${consumer.pid}.signals_lost`)).toBe(0);
  expect(stats.get('forks_seen_process')).toBeGreaterThanOrEqual(forks.length);
  expect(stats.get('forks_relayed')).toBeGreaterThanOrEqual(forks.length);
  expect(stats.get('signals_sent')).toBe(stats.get(`registrant.${consumer.pid}.signals_sent`));

  // Read-only, root's writes included: EACCES, and nothing changes.
  expect(() => fs.writeFileSync(`${d.mountpoint}/stats`, '0')).toThrow(
    expect.objectContaining({ code: 'EACCES' }),
  );

  await consumer.stop('SIGKILL');
  await waitFor('the exited registrant to be pruned', () =>
    readStats(d.mountpoint).get('registrants') === 0 ? true : undefined,
  );
  // Pruned once, for either reason: its pidfd polled readable ('exited'), or, when a fork on the
  // machine came first after it was reaped, the send said ESRCH ('gone'). The worker looks at
  // the pidfds every 100 ms while forks flow, so on a busy machine either can come first.
  const after = readStats(d.mountpoint);
  expect(
    (after.get('registrants_pruned_exited') ?? 0) + (after.get('registrants_pruned_gone') ?? 0),
  ).toBe(1);

  await d.stop('SIGTERM');
  expect(
    d.stderr.some((l) => /stats at shutdown: uptime_seconds=\d+ .*registrants_ever=1/.test(l)),
  ).toBe(true);
});
