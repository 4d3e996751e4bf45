/**
 * The receive worker's catch-up priority (src/netlink/catchUpPriority.ts): behind the kernel by a
 * full batch of forks, the worker thread runs at --catch-up-nice (default -10) until it has caught
 * up, then at its own nice value again; the rest of the daemon is never raised. The backlog is
 * made for certain: the daemon is stopped (SIGSTOP) while a process makes 300 threads.
 */
import fs from 'node:fs';
import os from 'node:os';
import {
  CLI,
  TempDir,
  cleanupAll,
  compileFixture,
  parseSignals,
  spawnChild,
  waitFor,
} from '../support';
import { Daemon, RELAY_SIGNAL, consumerArgs, requireRootAndBuild } from './harness';

requireRootAndBuild();

const STORM_THREADS = 300;

let tmp: TempDir;
let consumerBin: string;
let threadsBin: string;
const stopped = new Set<Daemon>();

beforeAll(async () => {
  tmp = new TempDir();
  [consumerBin, threadsBin] = await Promise.all([
    compileFixture('rt_consumer', tmp.path),
    compileFixture('threads', tmp.path),
  ]);
});

afterAll(async () => {
  for (const d of stopped) if (d.running) process.kill(d.pid, 'SIGCONT');
  await cleanupAll();
});

/** The daemon's arguments: `--log-level debug` (it names its receive worker's thread), `extra`. */
function daemonArgs(extra: string[] = []): string[] {
  return ['--signal', String(RELAY_SIGNAL), '--log-level', 'debug', ...extra];
}

function startDaemon(name: string, extra: string[] = []): Promise<Daemon> {
  return Daemon.start(tmp.join(name), daemonArgs(extra));
}

/** The receive worker's thread id, from the daemon's debug log. */
async function workerTid(d: Daemon): Promise<number> {
  const line = await d.waitForLine(/the receive worker is thread \d+/, 'stderr');
  return Number(/thread (\d+)/.exec(line)?.[1]);
}

/**
 * Stop the daemon, make STORM_THREADS threads (their forks queue in its socket), let it run on,
 * and wait until a registrant has every thread's signal: the worker caught up.
 */
async function stormWhileStopped(d: Daemon): Promise<void> {
  const consumer = spawnChild(consumerBin, consumerArgs(d.file('processes')));
  await consumer.waitForLine(/^ready$/, 'stdout');
  stopped.add(d);
  process.kill(d.pid, 'SIGSTOP');
  let stormPid: number;
  try {
    const storm = spawnChild(threadsBin, [String(STORM_THREADS), 'quiet']);
    stormPid = storm.pid;
    const { code } = await storm.exited;
    expect(code).toBe(0);
  } finally {
    process.kill(d.pid, 'SIGCONT');
  }
  await waitFor(`${STORM_THREADS} signals for the storm's threads`, () =>
    parseSignals(consumer.stdout).filter((s) => s.pid === stormPid).length >= STORM_THREADS
      ? true
      : undefined,
  );
  await consumer.stop('SIGTERM');
}

test('behind a storm the worker is raised, and back at its own nice value once caught up', async () => {
  const d = await startDaemon('raised');
  await d.waitForLine(
    /the receive worker runs at nice -10 while it is behind the kernel \(its own: 0\)/,
    'stderr',
  );
  const tid = await workerTid(d);
  expect(os.getPriority(tid)).toBe(0);
  expect(d.stat('catch_ups')).toBe(0);

  await stormWhileStopped(d);
  // Counted only after a setpriority(2) that succeeded.
  expect(d.stat('catch_ups')).toBeGreaterThan(0);
  // Lowered at the first batch of one, or at the latest after a quiet second.
  await waitFor(`the worker (thread ${tid}) back at nice 0`, () =>
    os.getPriority(tid) === 0 ? true : undefined,
  );
  expect(os.getPriority(d.pid)).toBe(0); // the main thread: never raised
  expect(d.stderr.filter((l) => /cannot raise/.test(l))).toEqual([]);
});

test('--catch-up-nice off: the same backlog, and the worker is never raised', async () => {
  const d = await startDaemon('off', ['--catch-up-nice', 'off']);
  const tid = await workerTid(d);
  await stormWhileStopped(d);
  expect(d.stat('catch_ups')).toBe(0);
  expect(os.getPriority(tid)).toBe(0);
  expect(d.stderr.filter((l) => /while it is behind the kernel/.test(l))).toEqual([]);
});

test('without CAP_SYS_NICE: one warning line, never raised, and every fork still relayed', async () => {
  // setpriv drops the capability from the bounding set, so root's exec of node does not get it.
  const d = new Daemon(tmp.join('nonice'), daemonArgs(), [
    'setpriv',
    '--bounding-set',
    '-sys_nice',
  ]);
  await d.waitForLine(/ready: relaying forks/, 'stderr', 20000);
  expect(d.stderr.filter((l) => /cannot raise the receive worker/.test(l))).toEqual([
    expect.stringMatching(
      /cannot raise the receive worker to nice -10 when it falls behind \(setpriority: EACCES\).*give the daemon CAP_SYS_NICE, or pass --catch-up-nice off/,
    ),
  ]);
  const tid = await workerTid(d);
  await stormWhileStopped(d);
  expect(d.stat('catch_ups')).toBe(0);
  expect(os.getPriority(tid)).toBe(0);
});

test('a --catch-up-nice that is no nice value is refused with one clear line', async () => {
  for (const bad of ['-21', '20', 'fast', '-3.5']) {
    const child = spawnChild(process.execPath, [
      CLI,
      '--mountpoint',
      tmp.join('never'),
      '--catch-up-nice',
      bad,
    ]);
    const { code } = await child.exited;
    expect(code).not.toBe(0);
    expect(child.stderr.join('\n')).toMatch(
      /--catch-up-nice must be a nice value from -20 to 19, or off/,
    );
  }
  expect(fs.existsSync(tmp.join('never'))).toBe(false);
});
