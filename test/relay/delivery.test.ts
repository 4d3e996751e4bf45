/**
 * Delivery end to end (issue 3 §5): real consumers (test/fixtures/rt_consumer.c) receive the
 * RT signal from pidfd_send_signal with the patch's siginfo; registrants that exit or are reaped
 * disappear; a process that inherits a dead registrant's pid receives nothing; a full signal
 * queue loses signals for that registrant only.
 *
 * "Exactly one line per call" is checked with a sentinel: RT signals of one number are queued
 * in order (kernel/signal.c), so once the sentinel's line arrives, every earlier signal has.
 */
import fs from 'node:fs';
import { Relay, SI_ASYNCIO } from '../../src/relay/relay';
import { createPatchAttributes } from '../../src/relay/attributes';
import type { UnregisteredEvent } from '../../src/relay/registry';
import {
  compileFixture,
  TempDir,
  parseSignalLine,
  requireRoot,
  type ReceivedSignal,
  spawnChild,
  waitFor,
  cleanupAll,
} from '../support';
import {
  Consumer,
  exitEvent,
  forkEvent,
  otherThreadIds,
  startConsumerWithPid,
  taskState,
  TEST_SIGNAL,
} from './helpers';

let dir: string;
let binary: string;
const relays: Relay[] = [];

function newRelay(options: ConstructorParameters<typeof Relay>[0] = {}): Relay {
  const relay = new Relay({ signal: TEST_SIGNAL, ...options });
  relays.push(relay);
  return relay;
}

function line(parent: number, child: number): ReceivedSignal {
  return { sig: TEST_SIGNAL, code: SI_ASYNCIO, pid: parent, val: child };
}

/** The next 'unregistered' event of the relay's registry. */
function nextUnregistered(relay: Relay, timeoutMs = 5000): Promise<UnregisteredEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      relay.registry.off('unregistered', listener);
      reject(new Error('no unregistered event'));
    }, timeoutMs);
    const listener = (event: UnregisteredEvent): void => {
      clearTimeout(timer);
      resolve(event);
    };
    relay.registry.once('unregistered', listener);
  });
}

/** Deliver a sentinel and wait for it: afterwards `consumer.lines` holds everything sent before. */
async function flush(
  relay: Relay,
  consumer: Consumer,
  sentinel: number,
): Promise<ReceivedSignal[]> {
  relay.deliverFork(sentinel, sentinel);
  await waitFor(
    `sentinel ${sentinel} at ${consumer.pid}`,
    () => consumer.lines.some((l) => parseSignalLine(l).val === sentinel),
    10000,
  );
  return consumer.lines.map(parseSignalLine);
}

beforeAll(async () => {
  requireRoot();
  dir = new TempDir('relayfork-relay-').path;
  binary = await compileFixture('rt_consumer', dir);
});

afterEach(() => {
  for (const relay of relays.splice(0)) relay.close();
});

afterAll(cleanupAll);

describe('deliverFork', () => {
  test('one signal per call: SI_ASYNCIO, si_pid = parent, si_value = child', async () => {
    const consumer = await Consumer.start(binary);
    const relay = newRelay();
    expect(relay.registry.register(consumer.pid)).toBe('registered');
    expect(relay.deliverFork(1234, 5678)).toBe(1);
    expect(relay.deliverFork(2345, 6789)).toBe(1);
    expect(relay.deliverFork(3456, 7890)).toBe(1);
    const lines = await flush(relay, consumer, 999999);
    expect(lines).toEqual([
      line(1234, 5678),
      line(2345, 6789),
      line(3456, 7890),
      line(999999, 999999),
    ]);
    expect(relay.registry.get(consumer.pid)?.counters).toEqual({
      sent: 4,
      lost: 0,
      failed: 0,
      lastErrno: 0,
    });
    expect(relay.counters).toMatchObject({ forksRelayed: 4, signalsSent: 4, signalsLost: 0 });
    await consumer.stop();
  });

  test('every registrant gets every fork', async () => {
    const a = await Consumer.start(binary);
    const b = await Consumer.start(binary);
    const relay = newRelay();
    relay.registry.register(a.pid);
    relay.registry.register(b.pid);
    expect(relay.deliverFork(10, 11)).toBe(2);
    expect(relay.deliverFork(20, 21)).toBe(2);
    expect(await flush(relay, a, 777777)).toEqual([
      line(10, 11),
      line(20, 21),
      line(777777, 777777),
    ]);
    expect(await flush(relay, b, 777778)).toEqual([
      line(10, 11),
      line(20, 21),
      line(777777, 777777),
      line(777778, 777778),
    ]);
    await Promise.all([a.stop(), b.stop()]);
  });

  test('the signal in effect is the one sent', async () => {
    const consumer = await Consumer.start(binary, { args: ['--signal', '41'] });
    const relay = newRelay();
    expect(createPatchAttributes(relay).signal.store('41\n')).toBe('accepted');
    relay.registry.register(consumer.pid);
    relay.deliverFork(30, 31);
    await consumer.waitForLines(1);
    expect(consumer.lines.map(parseSignalLine)).toEqual([
      { sig: 41, code: SI_ASYNCIO, pid: 30, val: 31 },
    ]);
    await consumer.stop();
  });

  test('unregistering stops the signals; registering again resumes them', async () => {
    const consumer = await Consumer.start(binary);
    const relay = newRelay();
    const { processes } = createPatchAttributes(relay);
    expect(processes.store(`${consumer.pid}\n`)).toBe('accepted');
    relay.deliverFork(1, 101);
    expect(processes.store(`-${consumer.pid}\n`)).toBe('accepted');
    expect(relay.deliverFork(2, 102)).toBe(0);
    expect(processes.store(`${consumer.pid}\n`)).toBe('accepted');
    expect(await flush(relay, consumer, 103)).toEqual([line(1, 101), line(103, 103)]);
    await consumer.stop();
  });

  test('a thread id gets the signal itself, not its process (send_sig_info semantics)', async () => {
    const consumer = await Consumer.start(binary, { args: ['--thread'] });
    const [tid] = otherThreadIds(consumer.pid);
    const relay = newRelay();
    // Directed at the main thread, which never takes signal 40: stays pending there.
    relay.registry.register(consumer.pid);
    expect(relay.deliverFork(5, 501)).toBe(1);
    relay.registry.unregister(consumer.pid);
    // Directed at the thread that loops on sigwaitinfo.
    expect(relay.registry.register(tid)).toBe('registered');
    relay.deliverFork(6, 601);
    expect(await flush(relay, consumer, 602)).toEqual([line(6, 601), line(602, 602)]);
    await consumer.stop();
  });
});

describe('handleEvents: fork events', () => {
  test('a new process: si_pid = parentPid; a new thread: si_pid = childTgid', async () => {
    const consumer = await Consumer.start(binary);
    const relay = newRelay();
    relay.registry.register(consumer.pid);
    relay.handleEvents([
      forkEvent(300, 300, 301, 301), // process fork from a single-threaded parent
      forkEvent(302, 300, 303, 303), // process fork from thread 302 of process 300
      forkEvent(299, 299, 304, 300), // thread 304 created in process 300 (parent 299's child)
      exitEvent(999999),
    ]);
    expect(await flush(relay, consumer, 305)).toEqual([
      line(300, 301),
      line(302, 303),
      line(300, 304),
      line(305, 305),
    ]);
    expect(relay.counters.forksSeen).toBe(3);
    await consumer.stop();
  });

  test('processesOnly relays only child pid == child tgid', async () => {
    const consumer = await Consumer.start(binary);
    const relay = newRelay({ processesOnly: true });
    relay.registry.register(consumer.pid);
    relay.handleEvents([forkEvent(400, 400, 401, 400), forkEvent(400, 400, 402, 402)]);
    expect(await flush(relay, consumer, 403)).toEqual([line(400, 402), line(403, 403)]);
    expect(relay.counters).toMatchObject({ forksSeen: 2, forksRelayed: 2 });
    await consumer.stop();
  });
});

describe('registrants that exit', () => {
  test('ESRCH: a reaped registrant is removed as gone, the others still get the fork', async () => {
    const doomed = await Consumer.start(binary);
    const survivor = await Consumer.start(binary);
    const relay = newRelay();
    relay.registry.register(survivor.pid);
    relay.registry.register(doomed.pid);
    await doomed.stop();
    const removal = nextUnregistered(relay);
    expect(relay.deliverFork(50, 51)).toBe(1);
    expect(await removal).toMatchObject({ id: doomed.pid, reason: 'gone', comm: 'rt_consumer' });
    expect(relay.registry.ids()).toEqual([survivor.pid]);
    expect(relay.counters.registrantsGone).toBe(1);
    expect(await flush(relay, survivor, 52)).toEqual([line(50, 51), line(52, 52)]);
    await survivor.stop();
  });

  test('exit event: the registrant is removed once its pidfd shows the exit', async () => {
    const consumer = await Consumer.start(binary);
    const relay = newRelay();
    relay.registry.register(consumer.pid);
    await consumer.stop();
    const removal = nextUnregistered(relay);
    relay.handleEvents([exitEvent(consumer.pid)]);
    expect(relay.registry.has(consumer.pid)).toBe(false);
    expect(await removal).toMatchObject({ id: consumer.pid, reason: 'exited' });
    expect(relay.counters.registrantsExited).toBe(1);
    expect(createPatchAttributes(relay).processes.show()).toBe('\n');
  });

  test('a stale exit event (the task is alive) never drops the registrant', async () => {
    const consumer = await Consumer.start(binary);
    const relay = newRelay({ exitRecheckDelaysMs: [1, 2, 4] });
    relay.registry.register(consumer.pid);
    relay.handleEvents([exitEvent(consumer.pid)]);
    await waitFor('the re-checks to end', () => relay.counters.staleExitEvents === 1, 5000);
    expect(relay.registry.ids()).toEqual([consumer.pid]);
    expect(await flush(relay, consumer, 60)).toEqual([line(60, 60)]);
    await consumer.stop();
  });

  test('an exit seen only by a re-check still removes the registrant', async () => {
    const consumer = await Consumer.start(binary);
    const relay = newRelay({ exitRecheckDelaysMs: [200, 400, 800, 1600, 3200] });
    relay.registry.register(consumer.pid);
    relay.handleEvents([exitEvent(consumer.pid)]);
    expect(relay.registry.has(consumer.pid)).toBe(true);
    const removal = nextUnregistered(relay, 10000);
    await consumer.stop();
    expect(await removal).toMatchObject({ id: consumer.pid, reason: 'exited' });
    expect(relay.counters.staleExitEvents).toBe(0);
  });

  test('a zombie registrant (exited, never reaped) goes on its exit event or at a read', async () => {
    // sh forks the consumer, then execs sleep, which never reaps it.
    // A group of its own: sh, then sleep, and the consumer, ended together.
    const parent = spawnChild(
      'sh',
      ['-c', `"${binary}" --signal ${TEST_SIGNAL} & echo pid=$!; exec sleep 1000`],
      { group: true },
    );
    try {
      // The consumer's "ready" and sh's "pid=" race each other: wait for both, in either order.
      const pid = await waitFor('the consumer under sh', () => {
        const shown = parent.stdout.find((l) => /^pid=\d+$/.test(l));
        return shown !== undefined && parent.stdout.includes('ready') && Number(shown.slice(4));
      });
      const byEvent = newRelay();
      const byRead = newRelay();
      expect(byEvent.registry.register(pid)).toBe('registered');
      expect(byRead.registry.register(pid)).toBe('registered');
      process.kill(pid, 'SIGTERM');
      await waitFor('the zombie', () => taskState(pid) === 'Z', 5000);

      // A zombie keeps its pid: the kernel accepts the signal (and drops it), no ESRCH.
      expect(byEvent.deliverFork(70, 71)).toBe(1);
      expect(byEvent.registry.has(pid)).toBe(true);
      byEvent.handleEvents([exitEvent(pid)]);
      expect(byEvent.registry.has(pid)).toBe(false);

      // Its exit event lost: a read of processes drops it.
      expect(createPatchAttributes(byRead).processes.show()).toBe('\n');
      expect(byRead.counters.registrantsExited).toBe(1);

      // And a zombie cannot be registered: it is no task that can take a signal.
      const late = newRelay();
      expect(late.registry.register(pid)).toBe('no-such-task');
      expect(createPatchAttributes(late, { strict: true }).processes.store(`${pid}`)).toBe(
        'rejected',
      );
    } finally {
      // The consumer holds sh's stdout pipe: it goes with the group, or the pipe outlives the test.
      await parent.stop('SIGKILL');
    }
  });

  test('a read of processes drops a registrant that exited while its exit event was lost', async () => {
    const consumer = await Consumer.start(binary);
    const other = await Consumer.start(binary);
    const relay = newRelay();
    const { processes } = createPatchAttributes(relay);
    processes.store(`${consumer.pid}`);
    processes.store(`${other.pid}`);
    await consumer.stop();
    expect(relay.registry.ids()).toEqual([other.pid, consumer.pid]);
    expect(processes.show()).toBe(`${other.pid} \n`);
    expect(relay.counters.registrantsExited).toBe(1);
    await other.stop();
  });
});

describe('pid reuse', () => {
  test('a new process with a dead registrant’s pid receives nothing and is not listed', async () => {
    const original = await Consumer.start(binary);
    const pid = original.pid;
    const relay = newRelay({ exitRecheckDelaysMs: [1, 2, 4] });
    const { processes } = createPatchAttributes(relay);
    expect(processes.store(`${pid}\n`)).toBe('accepted');
    await original.stop();

    const stranger = await startConsumerWithPid(binary, pid);
    expect(stranger.pid).toBe(pid);
    // Still listed in the registry (no exit event was fed), but the pidfd names the dead task:
    expect(relay.registry.has(pid)).toBe(true);
    const removal = nextUnregistered(relay);
    expect(relay.deliverFork(80, 81)).toBe(0);
    expect(await removal).toMatchObject({ id: pid, reason: 'gone' });
    expect(processes.show()).toBe('\n');

    // The stranger registers for real; a late exit event of the dead one must not drop it.
    expect(processes.store(`${pid}\n`)).toBe('accepted');
    relay.handleEvents([exitEvent(pid)]);
    await waitFor('the re-checks to end', () => relay.counters.staleExitEvents === 1, 5000);
    expect(processes.show()).toBe(`${pid} \n`);
    // Only the sentinel: the fork relayed while it was not registered never reached it.
    expect(await flush(relay, stranger, 82)).toEqual([line(82, 82)]);
    await stranger.stop();
  });
});

/** Otherwise unused uids (no passwd entry needed) for the queue-limit test. */
const RECEIVER_UID = 61234;
const FULL_UID = 61235;

describe('full signal queue', () => {
  test('EAGAIN loses signals for that registrant only, counted, never stalling the others', async () => {
    const limit = 4;
    const sends = 12;
    // Each with a uid of its own, so neither root's nor each other's pending signals count.
    const receiver = await Consumer.start(binary, { uid: RECEIVER_UID });
    const full = await Consumer.start(binary, {
      args: ['--no-read'],
      sigpending: limit,
      uid: FULL_UID,
    });
    const status = fs.readFileSync(`/proc/${full.pid}/status`, 'latin1');
    expect(status).toMatch(new RegExp(`SigQ:\\s+0/${limit}\\n`));
    expect(status).toMatch(new RegExp(`Uid:\\s+${FULL_UID}\\s`));
    const relay = newRelay();
    relay.registry.register(receiver.pid);
    relay.registry.register(full.pid); // newest: the relay reaches it first on every fork
    for (let i = 0; i < sends; i++) relay.deliverFork(90, 9000 + i);
    const counters = relay.registry.get(full.pid)?.counters;
    expect(counters).toBeDefined();
    expect(counters?.sent).toBe(limit);
    expect(counters?.lost).toBe(sends - limit);
    expect((counters?.sent ?? 0) + (counters?.lost ?? 0)).toBe(sends);
    expect(relay.counters.signalsLost).toBe(counters?.lost);
    expect(relay.registry.has(full.pid)).toBe(true);
    const lines = await flush(relay, receiver, 9999);
    expect(lines).toEqual([
      ...Array.from({ length: sends }, (_, i) => line(90, 9000 + i)),
      line(9999, 9999),
    ]);
    await Promise.all([receiver.stop(), full.stop()]);
  });
});

describe('close', () => {
  test('closes every pidfd, forgets every registrant, and is idempotent', async () => {
    const consumer = await Consumer.start(binary);
    const relay = new Relay({ signal: TEST_SIGNAL });
    relay.registry.register(consumer.pid);
    const pidfd = relay.registry.get(consumer.pid)?.pidfd;
    expect(fs.readlinkSync(`/proc/self/fd/${pidfd}`)).toBe('anon_inode:[pidfd]');
    relay.handleEvents([exitEvent(consumer.pid)]); // leaves a re-check timer pending
    relay.close();
    relay.close();
    expect(relay.registry.size).toBe(0);
    let after: string | undefined;
    try {
      after = fs.readlinkSync(`/proc/self/fd/${pidfd}`);
    } catch {
      after = undefined;
    }
    expect(after).not.toBe('anon_inode:[pidfd]');
    await consumer.stop();
  });
});
