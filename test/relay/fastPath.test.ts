/**
 * The relay's fast path in process (issue 7): a Relay's fork table handed to a ProcConnector
 * subscribed to forks only. The receive worker signals the registrants itself; the main thread
 * receives no datagram unless it listens for 'events'; registrants' exits are seen on their
 * pidfds (no exit events are subscribed); removed pidfds are closed once the worker let go.
 */
import fs from 'node:fs';
import { ProcConnector } from '../../src/netlink/procConnector';
import { WARM_UP_DATAGRAMS, WARM_UP_FIRST_ID } from '../../src/netlink/receiveWorker';
import { Relay } from '../../src/relay/relay';
import type { UnregisteredEvent } from '../../src/relay/registry';
import type { LossNotice } from '../../src/netlink';
import {
  compileFixture,
  finished,
  spawnChild,
  TempDir,
  parseSignalLine,
  requireRoot,
  stopAllChildren,
  waitFor,
  cleanupAll,
  runForker,
} from '../support';
import { Consumer, TEST_SIGNAL } from './helpers';

let consumerBin: string;
let forkerBin: string;
let stormBin: string;
let stallBin: string;
let relay: Relay | undefined;
let connector: ProcConnector | undefined;

/** Runs test/fixtures/forker (width, depth); returns its [parent, child] pairs. */
function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

function fdTarget(fd: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return undefined;
  }
}

async function start(): Promise<{ relay: Relay; connector: ProcConnector }> {
  relay = new Relay({ signal: TEST_SIGNAL });
  connector = new ProcConnector({ events: ['fork'], relay: relay.link });
  await connector.open();
  await connector.selfTest();
  return { relay, connector };
}

async function stop(): Promise<void> {
  relay?.close();
  await connector?.close();
  relay = undefined;
  connector = undefined;
}

beforeAll(async () => {
  requireRoot();
  const dir = new TempDir('relayfork-relay-').path;
  [consumerBin, forkerBin, stormBin, stallBin] = await Promise.all([
    compileFixture('rt_consumer', dir),
    compileFixture('forker', dir),
    compileFixture('thread_storm', dir),
    compileFixture('stall_thread', dir),
  ]);
});

afterEach(async () => {
  await stop();
  await stopAllChildren();
});

afterAll(cleanupAll);

test('the worker relays every fork; no datagram reaches the main thread without a listener', async () => {
  const { relay, connector } = await start();
  const consumer = await Consumer.start(consumerBin);
  expect(relay.registry.register(consumer.pid)).toBe('registered');
  const parsedBefore = connector.counters.received.fork;
  const seenBefore = relay.counters.forksSeen;

  const forks = await runForker(forkerBin, 4, 2);
  const parents = new Set(forks.map(([p]) => p));
  const mine = (): Array<[number, number]> =>
    consumer.lines
      .map(parseSignalLine)
      .filter((s) => parents.has(s.pid))
      .map((s) => [s.pid, s.val]);
  await waitFor('a signal per fork', () => mine().length >= forks.length, 10000);
  expect(mine().sort()).toEqual([...forks].sort());
  for (const line of consumer.lines.map(parseSignalLine)) {
    expect(line).toMatchObject({ sig: TEST_SIGNAL, code: -4 });
  }
  // The worker counted them; the main thread parsed none of them.
  expect(relay.counters.forksSeen - seenBefore).toBeGreaterThanOrEqual(forks.length);
  expect(relay.counters.signalsSent).toBeGreaterThanOrEqual(forks.length);
  expect(connector.counters.received.fork).toBe(parsedBefore);

  // A library listener turns forwarding on: the same connector now emits events too.
  const seen: number[] = [];
  connector.on('events', (batch) => {
    for (const ev of batch) if (ev.kind === 'fork') seen.push(ev.childPid);
  });
  const more = await runForker(forkerBin, 2, 0);
  await waitFor(
    'the forks as events',
    () => more.every(([, child]) => seen.includes(child)),
    10000,
  );
});

test('the worker warms its fast path up before it starts, unseen by registrants and counters', async () => {
  // A registrant already in the table when the worker starts (as one restored from state is).
  relay = new Relay({ signal: TEST_SIGNAL });
  const consumer = await Consumer.start(consumerBin);
  expect(relay.registry.register(consumer.pid)).toBe('registered');
  connector = new ProcConnector({ events: ['fork'], relay: relay.link });
  await connector.open();
  // Every synthetic fork went through the fast path and made its send (to the daemon itself).
  expect(relay.warmUp).toEqual({
    forks: WARM_UP_DATAGRAMS,
    sent: WARM_UP_DATAGRAMS,
    ms: expect.any(Number),
  });
  // None of it is in the relay's counters (only the machine's own forks since the start).
  expect(relay.counters.forksSeen).toBeLessThan(WARM_UP_DATAGRAMS);
  expect(relay.counters.signalsSent).toBeLessThan(WARM_UP_DATAGRAMS);

  // Real forks reach the registrant; no synthetic one ever did.
  const forks = await runForker(forkerBin, 3, 0);
  const children = new Set(forks.map(([, child]) => child));
  const received = (): number[] => consumer.lines.map((l) => parseSignalLine(l).val);
  await waitFor(
    'a signal per fork',
    () => [...children].every((c) => received().includes(c)),
    10000,
  );
  expect(received().filter((val) => val >= WARM_UP_FIRST_ID)).toEqual([]);
});

test('a registrant that exits is removed through its pidfd, without exit events', async () => {
  const { relay } = await start();
  // The registrant is a consumer whose parent (sh, exec'd into sleep) never reaps it: once
  // killed it stays a zombie, so its pidfd is readable (exited) while a send to it still
  // succeeds. A reaped registrant could instead meet a fork elsewhere on the machine first and
  // be pruned through ESRCH ('gone'), which would not show the pidfd path at work.
  const parent = spawnChild('sh', [
    '-c',
    `"$0" --signal ${TEST_SIGNAL} & echo "registrant $!"; exec sleep 600`,
    consumerBin,
  ]);
  const pid = Number(
    /^registrant (\d+)$/.exec(await parent.waitForLine(/^registrant /, 'stdout'))?.[1],
  );
  await parent.waitForLine(/^ready$/, 'stdout');
  try {
    relay.registry.register(pid);
    const pidfd = relay.registry.get(pid)?.pidfd ?? -1;
    expect(fdTarget(pidfd)).toMatch(/pidfd/);
    const departed = new Promise<UnregisteredEvent>((resolve) =>
      relay.registry.once('unregistered', resolve),
    );
    process.kill(pid, 'SIGKILL');
    const event = await departed;
    expect(event).toMatchObject({ id: pid, reason: 'exited' });
    expect(relay.counters.registrantsExited).toBe(1);
    expect(relay.counters.registrantsGone).toBe(0);
    // Still a zombie: it was the pidfd, not a reaping, that told.
    expect(fs.readFileSync(`/proc/${pid}/stat`, 'utf8')).toMatch(/^\d+ \(.*\) Z /);
    // The pidfd is closed once the worker has acknowledged the change.
    await waitFor('the pidfd closed', () => !(fdTarget(pidfd) ?? '').includes('pidfd'), 10000);
  } finally {
    // Not a child of ours, so cleanupAll would not end it if an assertion failed first.
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already killed above.
    }
    await parent.stop();
  }
});

test('unregistering stops the signals, and the pidfd closes after the worker let go', async () => {
  const { relay } = await start();
  const [leaving, control] = await Promise.all([
    Consumer.start(consumerBin),
    Consumer.start(consumerBin),
  ]);
  relay.registry.register(leaving.pid);
  relay.registry.register(control.pid);
  const pidfd = relay.registry.get(leaving.pid)?.pidfd ?? -1;
  expect(relay.registry.unregister(leaving.pid)).toBe('unregistered');
  await waitFor('the pidfd closed', () => !(fdTarget(pidfd) ?? '').includes('pidfd'), 10000);
  const forks = await runForker(forkerBin, 3, 0);
  const parent = forks[0][0];
  // The control registrant is signalled in the same loop: once it has every fork of the run,
  // the worker has relayed them all, and `leaving` must have none.
  const ofRun = (c: Consumer): number =>
    c.lines.map(parseSignalLine).filter((s) => s.pid === parent).length;
  await waitFor("the control registrant's signals", () => ofRun(control) >= forks.length, 10000);
  expect(ofRun(leaving)).toBe(0);
  // Registered again, it is signalled again, so "nothing" above was not just slowness.
  relay.registry.register(leaving.pid);
  const after = await runForker(forkerBin, 1, 0);
  await waitFor(
    'the signal after registering again',
    () => leaving.lines.map(parseSignalLine).some((s) => s.val === after[0][1]),
    10000,
  );
});

test('closing the relay and the connector leaves no descriptor behind', async () => {
  const consumers = await Promise.all([0, 1, 2].map(() => Consumer.start(consumerBin)));
  const baseline = openFds(); // the consumers' pipes included
  const { relay } = await start();
  for (const c of consumers) relay.registry.register(c.pid);
  await runForker(forkerBin, 2, 0);
  await stop();
  expect(openFds()).toBe(baseline);
});

/**
 * What the thread `tid` of this process is blocked in: a system call's name (or its number) and
 * its arguments as /proc/<tid>/syscall shows them (hex registers), from one read of that file;
 * 'running' with none when it is not in a call.
 */
function blockedIn(tid: number): { name: string; args: string[] } {
  const text = fs.readFileSync(`/proc/self/task/${tid}/syscall`, 'utf8').trim();
  if (text === 'running') return { name: text, args: [] };
  // Numbers from arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h.
  const names: Record<string, Record<number, string>> = {
    x64: { 45: 'recvfrom', 232: 'epoll_wait', 281: 'epoll_pwait', 299: 'recvmmsg' },
    arm64: { 207: 'recvfrom', 22: 'epoll_pwait', 243: 'recvmmsg' },
  };
  const [nr, ...args] = text.split(' ');
  return { name: names[process.arch]?.[Number(nr)] ?? `syscall ${nr}`, args };
}

/** Blocked in the fast path's receive: recv (recvfrom), or recvmmsg. */
function receiving(tid: number): boolean {
  return /^(recvfrom|recvmmsg)$/.test(blockedIn(tid).name);
}

/**
 * The timeout (ms) of the epoll_wait the thread `tid` of this process is blocked in, or undefined
 * if it is not in one: the call's fourth argument (epoll_wait and epoll_pwait alike), an int, the
 * low 32 bits of its register.
 */
function epollTimeout(tid: number): number | undefined {
  const { name, args } = blockedIn(tid);
  if (!/^epoll_p?wait$/.test(name)) return undefined;
  return Number(BigInt(args[3]) & 0xffffffffn) | 0;
}

/** Asleep as an idle worker sleeps (waitWhileIdle): in epoll_wait with no timeout. */
function sleepingIdle(tid: number): boolean {
  return epollTimeout(tid) === -1;
}

test('a relaying worker waits in recv while forks come, in epoll_wait with no timeout once idle, and with its 1 s beat while events are forwarded', async () => {
  const { relay, connector } = await start();
  const tid = relay.worker.tid;
  expect(tid).toBeGreaterThan(0);
  // Idle (a second without a fork on the machine): asleep on the epoll set until something
  // happens, with no timeout to wake it.
  await waitFor('the idle worker asleep in epoll_wait with no timeout', () => sleepingIdle(tid));
  // Forwarding: the slow path drains and waits on the epoll set, beating every second.
  const listener = (): void => undefined;
  connector.on('events', listener);
  await runForker(forkerBin, 1, 0);
  await waitFor('the worker waiting in epoll while forwarding', () => epollTimeout(tid) === 1000);
  connector.off('events', listener);
  // While forks come (one every 100 ms here), the fast path: one blocking recv per wake-up
  // (recvmmsg one time in RECEIVE_PROBE_EVERY, or when behind), nothing else (issue 7's
  // profile: an epoll_wait before every recv cost the worker half again its CPU).
  const forks = spawnChild('sh', ['-c', 'while :; do sleep 0.1; done']);
  try {
    await waitFor('the worker blocked in recv', () => receiving(tid));
    // A worker blocked in recv still stops on close() (woken by a datagram of its own).
    await stop();
    expect(fs.existsSync(`/proc/self/task/${tid}`)).toBe(false);
  } finally {
    await forks.stop();
  }
});

test('an idle worker asleep in epoll_wait stops on close()', async () => {
  const { relay } = await start();
  const tid = relay.worker.tid;
  await waitFor('the idle worker asleep in epoll_wait with no timeout', () => sleepingIdle(tid));
  await stop();
  expect(fs.existsSync(`/proc/self/task/${tid}`)).toBe(false);
});

test('after a loss the worker posts the drop count once the queue has emptied, then goes back to the fast path', async () => {
  relay = new Relay({ signal: TEST_SIGNAL });
  // A queue of a few datagrams (the kernel doubles 8192 for its bookkeeping).
  connector = new ProcConnector({ events: ['fork'], relay: relay.link, receiveBufferBytes: 8192 });
  const losses: LossNotice[] = [];
  connector.on('loss', (l) => losses.push(l));
  await connector.open();
  await connector.selfTest();
  const consumer = await Consumer.start(consumerBin);
  relay.registry.register(consumer.pid);
  const tid = relay.worker.tid;
  const onFastPath = (): boolean => receiving(tid) || sleepingIdle(tid);
  await waitFor('the worker on the fast path', onFastPath);

  // The worker held stopped (ptrace stops that one thread) while a storm runs: the queue
  // overflows whatever the machine's speed. A worker left running may keep up with a storm (since
  // the warm-up it did at times in CI), and then there is no loss to test.
  const stall = spawnChild(stallBin, [String(tid), 'stdin'], { stdin: 'pipe' });
  await stall.waitForLine(/^stopped$/, 'stdout');
  const child = spawnChild(stormBin, ['2000', '4']);
  const storm = await finished(child.proc, 60_000);
  expect(storm.code).toBe(0);
  stall.proc.stdin?.end();
  await stall.waitForLine(/^resumed$/, 'stdout');
  await waitFor('a loss notice', () => losses.length > 0, 10000);
  // Back on the fast path once the queue has emptied (the slow path drained it).
  await waitFor('the worker back on the fast path', onFastPath);
  const { overruns, dropped } = connector.counters;
  expect(overruns).toBeGreaterThan(0);
  expect(dropped).toBeGreaterThan(0);
  // One notice at the ENOBUFS and at most one more when the queue has emptied, per overflow:
  // each notice makes the daemon scan /proc, so they must not repeat while a backlog drains.
  expect(losses.length).toBeLessThanOrEqual(2 * overruns);
  expect(losses[losses.length - 1]).toEqual({ overruns, dropped });
  // The relay goes on: a storm after the loss reaches the registrant (si_pid = that storm). Of
  // fewer threads than this queue holds (18 fork datagrams, measured), so that it cannot
  // overflow whatever the worker's speed (20 could, and once fell short in CI).
  const after = spawnChild(stormBin, ['10', '1']);
  expect((await finished(after.proc, 60_000)).code).toBe(0);
  await waitFor(
    "signals of the later storm's threads",
    () => consumer.lines.map(parseSignalLine).filter((l) => l.pid === after.pid).length === 10,
    10000,
  );
}, 120_000); // a liveness bound above the waits inside
