/**
 * Registrations survive a restart (issue 9 §1): kill -9 of the daemon, a new start on the same
 * mountpoint with the same state file, and the registrant receives forks again; a stranger that
 * got a stored id receives nothing; a corrupt state file is logged and ignored.
 */
import fs from 'node:fs';
import {
  TempDir,
  compileFixture,
  isMounted,
  parseSignals,
  spawnChild,
  waitFor,
  cleanupAll,
  runForker,
} from '../support';
import { Daemon, RELAY_SIGNAL, consumerArgs, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;
let consumerBin: string;
let forkerBin: string;

beforeAll(async () => {
  tmp = new TempDir();
  [consumerBin, forkerBin] = await Promise.all([
    compileFixture('rt_consumer', tmp.path),
    compileFixture('forker', tmp.path),
  ]);
});

afterAll(cleanupAll);

test('kill -9, then a new daemon: registrations and signal are back and forks flow again', async () => {
  const mp = tmp.join('crash');
  const state = tmp.join('crash.state');
  const args = ['--signal', '34', '--state', state];
  const first = await Daemon.start(mp, args);
  fs.writeFileSync(first.file('signal'), String(RELAY_SIGNAL));
  const consumer = spawnChild(consumerBin, consumerArgs(first.file('processes')));
  await consumer.waitForLine(/^ready$/, 'stdout');
  expect(first.listed()).toEqual([consumer.pid]);

  first.proc.kill('SIGKILL');
  await first.exited;
  expect(isMounted(mp)).toBe(true); // stale: nobody serves it

  const second = await Daemon.start(mp, args);
  await second.waitForLine(
    new RegExp(`restored from .*: 1 registrants \\(${consumer.pid}\\)`),
    'stderr',
  );
  expect(second.listed()).toEqual([consumer.pid]);
  expect(fs.readFileSync(second.file('signal'), 'utf8')).toBe(`${RELAY_SIGNAL}\n`);

  const before = parseSignals(consumer.stdout).length;
  const forks = await runForker(forkerBin, 3, 2);
  await waitFor('the forks after the restart', () => {
    const got = parseSignals(consumer.stdout).slice(before);
    return forks.every(([, child]) => got.some((s) => s.val === child)) ? got : undefined;
  });
  for (const s of parseSignals(consumer.stdout)) expect(s.sig).toBe(RELAY_SIGNAL);

  // A clean restart (systemctl restart) keeps them too.
  await second.stop('SIGTERM');
  const third = await Daemon.start(mp, args);
  expect(third.listed()).toEqual([consumer.pid]);
});

test('a stored id that now names another task is dropped: the stranger gets nothing', async () => {
  const mp = tmp.join('stranger');
  const state = tmp.join('stranger.state');
  const d = await Daemon.start(mp, ['--signal', String(RELAY_SIGNAL), '--state', state]);
  const consumer = spawnChild(consumerBin, consumerArgs(d.file('processes')));
  await consumer.waitForLine(/^ready$/, 'stdout');
  await d.stop('SIGTERM');
  // Forge what a reused id looks like: the same id, another task's start time.
  const saved = JSON.parse(fs.readFileSync(state, 'utf8')) as {
    registrants: Array<{ id: number; startTime: number }>;
  };
  expect(saved.registrants.map((r) => r.id)).toEqual([consumer.pid]);
  saved.registrants[0].startTime -= 1;
  fs.writeFileSync(state, JSON.stringify(saved));

  const next = await Daemon.start(mp, ['--signal', String(RELAY_SIGNAL), '--state', state]);
  await next.waitForLine(
    new RegExp(`dropped ${consumer.pid} \\(id now names another task\\)`),
    'stderr',
  );
  expect(next.listed()).toEqual([]);
  const before = consumer.stdout.length;
  await runForker(forkerBin, 2, 1);
  await new Promise((r) => setTimeout(r, 300));
  expect(parseSignals(consumer.stdout.slice(before))).toEqual([]);
});

test('a corrupt state file is logged and ignored, then replaced', async () => {
  const mp = tmp.join('corrupt');
  const state = tmp.join('corrupt.state');
  fs.writeFileSync(state, '\u0000garbage{');
  const d = await Daemon.start(mp, ['--signal', String(RELAY_SIGNAL), '--state', state]);
  await d.waitForLine(/ignoring the state file .*: not JSON/, 'stderr');
  expect(d.listed()).toEqual([]);
  expect(JSON.parse(fs.readFileSync(state, 'utf8'))).toMatchObject({
    format: 'relayfork-state/1',
    registrants: [],
  });
});
