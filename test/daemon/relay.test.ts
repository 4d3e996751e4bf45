/**
 * End to end, as a user runs it: the daemon on a temp mountpoint, a real C registrant that blocks
 * the signal, registers itself by writing its pid and loops on sigwaitinfo, and real forks.
 */
import fs from 'node:fs';
import {
  Child,
  TempDir,
  compileFixture,
  execFileAsync,
  parseSignals,
  spawnChild,
  waitFor,
  cleanupAll,
  runForker,
} from '../support';
import { Daemon, RELAY_SIGNAL, SI_ASYNCIO, consumerArgs, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;
let daemon: Daemon;
let registrantBin: string;
let forkerBin: string;
let threadsBin: string;

beforeAll(async () => {
  tmp = new TempDir();
  [registrantBin, forkerBin, threadsBin] = await Promise.all([
    compileFixture('rt_consumer', tmp.path),
    compileFixture('forker', tmp.path),
    compileFixture('threads', tmp.path),
  ]);
  daemon = await Daemon.start(tmp.join('mnt'));
});

afterAll(cleanupAll);

async function startRegistrant(register = true): Promise<Child> {
  const c = spawnChild(
    registrantBin,
    consumerArgs(register ? daemon.file('processes') : undefined),
  );
  await c.waitForLine(/^ready$/, 'stdout');
  return c;
}

test('every fork of a known tree reaches the registrant once, as the patch built it', async () => {
  const reg = await startRegistrant();
  expect(daemon.listed()).toContain(reg.pid);

  const forks = await runForker(forkerBin, 5, 4);
  expect(forks).toHaveLength(9);
  const forkParents = new Set(forks.map(([p]) => p));

  // Other processes on the machine fork too: look only at forks whose parent is in the tree.
  const mine = (): ReturnType<typeof parseSignals> =>
    parseSignals(reg.stdout).filter((s) => forkParents.has(s.pid));
  await waitFor('one signal per fork of the tree', () => mine().length >= forks.length && mine());
  // Give a duplicate the chance to show up before asserting "exactly one".
  await new Promise((r) => setTimeout(r, 200));

  const got = mine();
  expect(got.map((s) => [s.pid, s.val]).sort()).toEqual([...forks].sort());
  for (const s of got) {
    expect(s.sig).toBe(RELAY_SIGNAL);
    expect(s.code).toBe(SI_ASYNCIO);
  }
  await reg.stop();
});

test('unregistering stops the signals; a registrant that exits disappears from processes', async () => {
  const reg = await startRegistrant();
  fs.writeFileSync(daemon.file('processes'), `-${reg.pid}`);
  expect(daemon.listed()).not.toContain(reg.pid);

  const forks = await runForker(forkerBin, 3, 0);
  const parent = forks[0][0];
  await new Promise((r) => setTimeout(r, 300));
  expect(parseSignals(reg.stdout).filter((s) => s.pid === parent)).toEqual([]);

  // Registered again, then it exits: the daemon removes it on its own.
  fs.writeFileSync(daemon.file('processes'), `${reg.pid}`);
  expect(daemon.listed()).toContain(reg.pid);
  await reg.stop();
  await waitFor(
    'the exited registrant to leave processes',
    () => !daemon.listed().includes(reg.pid),
  );
});

test('a new process that gets a dead registrant\u2019s pid receives nothing and is not listed', async () => {
  const first = await startRegistrant();
  const pid = first.pid;
  await first.stop();

  // Make the next pid the kernel hands out be the dead registrant's: ns_last_pid = pid - 1.
  // Other forks on the machine can take it first, so try a few times.
  let second: Child | undefined;
  for (let attempt = 0; attempt < 50 && !second; attempt++) {
    fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    const c = spawnChild(registrantBin, consumerArgs());
    await c.waitForLine(/^ready/, 'stdout');
    if (c.pid === pid) second = c;
    else await c.stop();
  }
  if (!second) throw new Error(`could not get pid ${pid} again in 50 attempts`);

  const forks = await runForker(forkerBin, 3, 1);
  await new Promise((r) => setTimeout(r, 300));
  expect(daemon.listed()).not.toContain(pid);
  const parents = new Set(forks.map(([p]) => p));
  expect(parseSignals(second.stdout).filter((s) => parents.has(s.pid))).toEqual([]);
  await second.stop();
});

/** Runs test/fixtures/threads and returns its pid and the thread ids it made. */
async function runThreads(count: number): Promise<{ pid: number; tids: number[] }> {
  const { stdout } = await execFileAsync(threadsBin, [String(count)]);
  const pid = Number(/^pid (\d+)$/m.exec(stdout)?.[1]);
  const tids = [...stdout.matchAll(/^thread (\d+)$/gm)].map((m) => Number(m[1]));
  return { pid, tids };
}

test('new threads are relayed as forks, with the thread id as the child', async () => {
  const reg = await startRegistrant();
  const { pid, tids } = await runThreads(10);
  expect(tids).toHaveLength(10);
  const tidSet = new Set(tids);
  const threadSignals = (): ReturnType<typeof parseSignals> =>
    parseSignals(reg.stdout).filter((s) => tidSet.has(s.val));
  await waitFor('a signal per thread', () => threadSignals().length >= 10);
  expect(
    threadSignals()
      .map((s) => s.val)
      .sort(),
  ).toEqual([...tids].sort());
  // The patch's si_pid was the creating thread; here the main thread created them all, so it is
  // the process's pid (README, "Where relayfork differs").
  expect(new Set(threadSignals().map((s) => s.pid))).toEqual(new Set([pid]));
  await reg.stop();
});

test('--processes-only relays new processes but not new threads', async () => {
  const only = await Daemon.start(tmp.join('processes-only'), [
    '--signal',
    String(RELAY_SIGNAL),
    '--processes-only',
  ]);
  try {
    const reg = spawnChild(registrantBin, consumerArgs(only.file('processes')));
    await reg.waitForLine(/^ready/, 'stdout');
    const { tids } = await runThreads(10);
    const forks = await runForker(forkerBin, 2, 0);
    const parent = forks[0][0];
    await waitFor(
      'the process forks',
      () => parseSignals(reg.stdout).filter((s) => s.pid === parent).length >= 2,
    );
    await new Promise((r) => setTimeout(r, 200));
    const tidSet = new Set(tids);
    expect(parseSignals(reg.stdout).filter((s) => tidSet.has(s.val))).toEqual([]);
    await reg.stop();
  } finally {
    await only.shutdown();
  }
});

test('the files answer while a thread storm runs (liveness: within seconds)', async () => {
  const reg = await startRegistrant();
  const storm = spawnChild(threadsBin, ['100000', 'quiet']);
  const worst = { ms: 0 };
  let reads = 0;
  while (storm.running) {
    const t0 = process.hrtime.bigint();
    // Another process reads, as a user would with cat.
    await execFileAsync('cat', [daemon.file('processes')]);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    worst.ms = Math.max(worst.ms, ms);
    reads++;
    await new Promise((r) => setTimeout(r, 20));
  }
  expect(reads).toBeGreaterThan(5);
  // A liveness bound, not a timing one: on a shared 2-core machine a read took up to 0.4 s with
  // or without the relay in the worker (the storm holds both cores); the benchmark reports
  // figures. A main thread blocked by the relay would show here as many seconds.
  expect(worst.ms / 1000).toBeLessThan(3);
  await reg.stop();
}, 120000);
