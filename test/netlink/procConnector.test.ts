/**
 * ProcConnector against the real kernel (as root): typed events from our own children, the
 * kernel filter and the legacy path, the self-test, close(). Other tests and helpers may fork at
 * the same time, so every assertion is about events of pids these tests created.
 */
import * as socketModule from '../../src/netlink/socket';
import {
  NLMSGHDR,
  NLMSG_NOOP,
  PROC_CN_MCAST_IGNORE,
  PROC_CN_MCAST_LISTEN,
  PROC_EVENT_EXEC,
  parseDatagram,
} from '../../src/netlink/cnProcStructs';
import {
  ProcConnector,
  ProcConnectorError,
  describeProcConnectorError,
  toProcConnectorError,
  type ForkEvent,
  type ProcEvent,
  type ProcEventKind,
} from '../../src/netlink';
import { Errno, MSG_DONTWAIT, recvOrErrno, syscallError } from '../../src/native/libc';
import { TempDir, cleanupAll, compileFixture, run, spawnChild, waitFor } from '../support';
import { collect, eventfdCount, openSocketInodes, parsePids, threadCount } from './helpers';

let allKinds: string;

beforeAll(async () => {
  allKinds = await compileFixture('netlink_all_kinds', new TempDir('relayfork-netlink-').path);
});

afterAll(cleanupAll);

/** Connectors opened by a test; closed after it whatever happens. */
const opened: ProcConnector[] = [];
afterEach(async () => {
  for (const c of opened.splice(0)) await c.close();
  jest.restoreAllMocks();
});

async function openConnector(...args: ConstructorParameters<typeof ProcConnector>) {
  const connector = new ProcConnector(...args);
  opened.push(connector);
  const events = collect(connector);
  await connector.open();
  return { connector, events };
}

/** Run the all-kinds fixture; returns the pids it printed. */
async function runAllKinds(): Promise<Record<string, number>> {
  const ran = await run(allKinds, []);
  expect(ran.stderr).toBe('');
  expect(ran.code).toBe(0);
  return parsePids(ran.stdout);
}

function tgidOf(e: ProcEvent): number {
  return e.kind === 'fork' ? e.childTgid : e.processTgid;
}

describe('events from our own children', () => {
  test('fork, exec and exit of a child carry its real pid and ours', async () => {
    const { connector, events } = await openConnector();
    expect(connector.subscription).toBe('legacy'); // every kind: the plain listen
    const child = spawnChild('/bin/sh', ['-c', 'exit 3']);
    const { pid } = child;
    await child.exited;
    const mine = (): ProcEvent[] => events.filter((e) => tgidOf(e) === pid);
    await waitFor('the child exit event', () => mine().some((e) => e.kind === 'exit'));

    const [fork, exec, exit] = mine();
    expect(fork).toMatchObject({
      kind: 'fork',
      parentPid: process.pid,
      parentTgid: process.pid,
      childPid: pid,
      childTgid: pid,
    });
    expect(exec).toMatchObject({ kind: 'exec', processPid: pid, processTgid: pid });
    expect(exit).toMatchObject({
      kind: 'exit',
      processPid: pid,
      processTgid: pid,
      exitCode: 3 << 8,
      exitSignal: 17, // SIGCHLD
      parentPid: process.pid,
      parentTgid: process.pid,
    });
    expect(mine()).toHaveLength(3);
    for (const e of [fork, exec, exit]) {
      expect(typeof e.timestampNs).toBe('bigint');
      expect(e.cpu).toBeLessThan(1024);
    }
    expect(connector.counters.received.fork).toBeGreaterThanOrEqual(1);
    expect(connector.counters.malformed).toBe(0);
  });

  test('every kind, typed, and a thread is a fork with child_pid != child_tgid', async () => {
    const { events } = await openConnector();
    const pids = await runAllKinds();
    const of = (kind: ProcEventKind, tgid: number): ProcEvent[] =>
      events.filter((e) => e.kind === kind && tgidOf(e) === tgid);
    // The fixture's own exit, not its thread's (which has the same tgid and comes first).
    await waitFor('the fixture exit', () =>
      of('exit', pids.parent).some((e) => e.kind === 'exit' && e.processPid === pids.parent),
    );

    expect(of('exec', pids.exec)).toHaveLength(1);
    expect(of('comm', pids.ids)).toMatchObject([{ comm: 'rf-kinds' }]);
    expect(of('sid', pids.ids)).toHaveLength(1);
    expect(of('gid', pids.ids)).toMatchObject([{ rgid: 65534, egid: 65534 }]);
    expect(of('uid', pids.ids)).toMatchObject([{ ruid: 65534, euid: 65534 }]);
    expect(of('exit', pids.ids)).toMatchObject([{ exitCode: 7 << 8, parentTgid: pids.parent }]);
    expect(of('ptrace', pids.trace)).toMatchObject([
      { tracerTgid: pids.parent },
      { tracerTgid: 0 },
    ]);
    expect(of('coredump', pids.segv)).toMatchObject([{ parentTgid: pids.parent }]);
    expect(of('exit', pids.segv)).toMatchObject([{ exitCode: 11 }]); // SIGSEGV

    const threadForks = events.filter(
      (e): e is ForkEvent =>
        e.kind === 'fork' && e.childTgid === pids.parent && e.childPid !== e.childTgid,
    );
    expect(threadForks).toHaveLength(1);
    expect(threadForks[0].childPid).toBe(pids.thread);
    expect(of('exit', pids.parent).map((e) => e.kind === 'exit' && e.processPid)).toEqual([
      pids.thread,
      pids.parent,
    ]);
  });
});

describe('filtering', () => {
  test('a subset is filtered by the kernel (Linux >= 6.6) and only those kinds arrive', async () => {
    const { connector, events } = await openConnector({ events: ['exec', 'exit'] });
    expect(connector.subscription).toBe('filtered');
    const pids = await runAllKinds();
    await waitFor('the fixture exit', () =>
      events.some((e) => e.kind === 'exit' && e.processPid === pids.parent),
    );
    expect(new Set(events.map((e) => e.kind))).toEqual(new Set(['exec', 'exit']));
    expect(events.some((e) => e.kind === 'exec' && e.processTgid === pids.exec)).toBe(true);
    const counters = connector.counters;
    expect(counters.received.fork).toBe(0);
    expect(counters.received.uid).toBe(0);
    expect(counters.received.exec).toBeGreaterThanOrEqual(2);
    // cn_msg.seq counts the kinds filtered out too: gaps are not counted in filtered mode.
    expect(counters.sequenceGaps).toBe(0);
  });

  test('the legacy 4-byte listen (the fallback) delivers the subset, filtered here', async () => {
    const { connector, events } = await openConnector({
      events: ['fork', 'exit'],
      legacyListen: true,
    });
    expect(connector.subscription).toBe('legacy');
    const pids = await runAllKinds();
    await waitFor('the fixture exit', () =>
      events.some((e) => e.kind === 'exit' && e.processPid === pids.parent),
    );
    expect(new Set(events.map((e) => e.kind))).toEqual(new Set(['fork', 'exit']));
    expect(events.filter((e) => e.kind === 'fork' && e.childTgid === pids.parent)).toHaveLength(2);
    expect(connector.counters.received.exec).toBe(0);
    expect(connector.counters.sequenceGaps).toBe(0);
  });

  test('on the raw socket, the kernel sends a filtered subscriber only its kinds and no ACKs', async () => {
    const { fd } = socketModule.openProcConnectorSocket(4 << 20);
    try {
      const buf = Buffer.alloc(64 * 1024);
      const drain = (): Buffer[] => {
        const got: Buffer[] = [];
        for (;;) {
          const n = recvOrErrno(fd, buf, 0, buf.length, MSG_DONTWAIT);
          if (n === -Errno.EAGAIN) return got;
          if (n < 0) throw syscallError('recv', -n);
          got.push(Buffer.from(buf.subarray(0, n)));
        }
      };
      socketModule.sendMcastRequest(fd, {
        op: PROC_CN_MCAST_LISTEN,
        eventType: PROC_EVENT_EXEC,
        seq: 1,
        ack: 0x1234,
      });
      // Anything queued before the filter took effect (an unsubscribed bound socket receives
      // every event while anyone else listens) goes first.
      await run('/bin/true', []);
      drain();
      const pids = await runAllKinds();
      const kinds: string[] = [];
      let acks = 0;
      for (const d of drain()) {
        parseDatagram(new DataView(d.buffer, d.byteOffset, d.length), 0, d.length, {
          event: (e) => kinds.push(e.kind),
          ack: () => acks++,
          malformed: (reason) => kinds.push(`malformed: ${reason}`),
        });
      }
      expect(acks).toBe(0);
      expect(new Set(kinds)).toEqual(new Set(['exec']));
      expect(kinds.length).toBeGreaterThanOrEqual(2); // the fixture's and its child's
      expect(pids.exec).toBeGreaterThan(0);

      // PROC_CN_MCAST_IGNORE: this socket gets nothing more, though others still listen.
      socketModule.sendMcastRequest(fd, { op: PROC_CN_MCAST_IGNORE, seq: 2, ack: 0 });
      drain();
      await runAllKinds();
      expect(drain()).toEqual([]);
    } finally {
      socketModule.closeSocket(fd);
    }
  });
});

test('events from the time open() confirmed the subscription arrive once it resolves', async () => {
  const connector = new ProcConnector({ events: ['fork', 'exit'] });
  opened.push(connector);
  const unconfirmed: number[] = [];
  const events = collect(connector);
  connector.on('events', (batch) => {
    if (connector.subscription === undefined) unconfirmed.push(batch.length);
  });
  const before = process.hrtime.bigint();
  await connector.open();
  // open() forked children of its own to confirm the filter: their events were held, not lost.
  const ownForks = events.filter(
    (e) => e.kind === 'fork' && e.parentTgid === process.pid && e.timestampNs >= before,
  );
  expect(ownForks.length).toBeGreaterThanOrEqual(2);
  expect(unconfirmed).toEqual([]);
});

describe('selfTest', () => {
  test('passes when events flow, also when the filter excludes fork', async () => {
    const { connector, events } = await openConnector({ events: ['exec'] });
    await connector.selfTest();
    // The self-test widened the kernel filter to fork and narrowed it again.
    const pids = await runAllKinds();
    await waitFor('the exec of the fixture child', () =>
      events.some((e) => e.kind === 'exec' && e.processTgid === pids.exec),
    );
    expect(events.every((e) => e.kind === 'exec')).toBe(true);
  });

  test('refuses before open()', async () => {
    const connector = new ProcConnector();
    await expect(connector.selfTest()).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('close()', () => {
  test("wakeReader queues a datagram of the socket's own, NLMSG_NOOP, which the parser ignores", () => {
    const { fd } = socketModule.openProcConnectorSocket(1 << 20);
    try {
      // Never subscribed: nothing else arrives unless another subscriber makes the kernel
      // multicast, so look for ours among whatever is queued.
      expect(socketModule.wakeReader(fd)).toBe(true);
      const buf = Buffer.alloc(4096);
      const types: number[] = [];
      for (;;) {
        const n = recvOrErrno(fd, buf, 0, buf.length, MSG_DONTWAIT);
        if (n === -Errno.EAGAIN) break;
        if (n < 0) throw syscallError('recv', -n);
        if (n === NLMSGHDR.SIZE) types.push(buf.readUInt16LE(NLMSGHDR.TYPE));
      }
      expect(types).toEqual([NLMSG_NOOP]);
      const parsed: string[] = [];
      parseDatagram(new DataView(buf.buffer, buf.byteOffset, NLMSGHDR.SIZE), 0, NLMSGHDR.SIZE, {
        event: (e) => parsed.push(e.kind),
        ack: () => parsed.push('ack'),
        malformed: (reason) => parsed.push(reason),
      });
      expect(parsed).toEqual([]);
    } finally {
      socketModule.closeSocket(fd);
    }
  });

  test('unsubscribes, then stops the worker, then closes the socket: nothing left behind', async () => {
    // Warm up anything that creates threads lazily so the count below is the worker's.
    const warm = new ProcConnector();
    await warm.open();
    await warm.close();
    const threadsBefore = await threadCount();
    const eventfdsBefore = await eventfdCount();
    const socketsBefore = await openSocketInodes();

    const sends = jest.spyOn(socketModule, 'sendMcastRequest');
    const closes = jest.spyOn(socketModule, 'closeSocket');
    const connector = new ProcConnector({ events: ['fork', 'exit'] });
    const events = collect(connector);
    await connector.open();
    const fd = connector.fileDescriptor;
    const ours = [...(await openSocketInodes())].filter((i) => !socketsBefore.has(i));
    expect(ours).toHaveLength(1);
    expect(await threadCount()).toBe(threadsBefore + 1);
    // Ours, and the worker's own event loop's.
    expect(await eventfdCount()).toBeGreaterThan(eventfdsBefore);

    await Promise.all([connector.close(), connector.close()]);
    await connector.close(); // idempotent

    // IGNORE was the last request, sent on our socket before it was closed.
    const last = sends.mock.calls[sends.mock.calls.length - 1];
    expect(last[0]).toBe(fd);
    expect(last[1].op).toBe(PROC_CN_MCAST_IGNORE);
    expect(closes).toHaveBeenCalledTimes(1);
    expect(closes).toHaveBeenCalledWith(fd);
    expect(sends.mock.invocationCallOrder[sends.mock.calls.length - 1]).toBeLessThan(
      closes.mock.invocationCallOrder[0],
    );
    expect(connector.fileDescriptor).toBe(-1);

    // The socket is gone from our fds, and so are the eventfd and the worker thread.
    expect((await openSocketInodes()).has(ours[0])).toBe(false);
    expect(await eventfdCount()).toBe(eventfdsBefore);
    expect(await threadCount()).toBe(threadsBefore);

    // Nothing is emitted after close().
    const count = events.length;
    await run('/bin/true', []);
    await new Promise((r) => setTimeout(r, 100));
    expect(events.length).toBe(count);
    await expect(connector.open()).rejects.toMatchObject({ code: 'EINVAL' });
  });

  test('close() during open() waits for it and undoes it', async () => {
    const connector = new ProcConnector({ events: ['exec'] });
    const opening = connector.open();
    const closing = connector.close();
    await opening;
    await closing;
    expect(connector.fileDescriptor).toBe(-1);
    expect(connector.subscription).toBeUndefined();
  });

  test('close() of a connector never opened is a no-op', async () => {
    await new ProcConnector().close();
  });
});

describe('errors say what is wrong and what to do', () => {
  test.each([
    ['EPROTONOSUPPORT', 'socket', /CONFIG_CONNECTOR=y and CONFIG_PROC_EVENTS=y/],
    ['EPERM', 'bind', /run as root or with CAP_NET_ADMIN \(required on kernels before 6\.6\)/],
    ['EACCES', 'bind', /run as root or with CAP_NET_ADMIN/],
    ['ECONNREFUSED', 'send', /not in the initial network namespace.*--pid=host --net=host/],
  ])('%s from %s()', (code, call, advice) => {
    const errno = { EPROTONOSUPPORT: 93, EPERM: 1, EACCES: 13, ECONNREFUSED: 111 }[code] ?? 0;
    const line = describeProcConnectorError(syscallError(call, errno));
    expect(line).toMatch(advice);
    expect(line).toContain(`${call}`);
    expect(line).not.toContain('\n');
  });

  test('EPERM outside the initial user namespace names the namespace, not root, with the fix', () => {
    const err = syscallError('bind', 1);
    const line = toProcConnectorError(err, () => false).message;
    expect(line).toMatch(/bind\(\) failed with EPERM/);
    expect(line).toMatch(
      /outside the initial user namespace, where the kernel refuses or ignores proc connector listeners; run relayfork on the host, or in Docker with --pid=host --net=host/,
    );
    expect(line).not.toMatch(/run as root/);
    expect(toProcConnectorError(err, () => false).code).toBe('EPERM');
    // In the initial user namespace the same errno is a missing capability.
    expect(toProcConnectorError(err, () => true).message).toMatch(/run as root/);
  });

  test('an unknown kind is refused at construction', () => {
    expect(() => new ProcConnector({ events: ['fork', 'spawn' as ProcEventKind] })).toThrow(
      ProcConnectorError,
    );
    expect(() => new ProcConnector({ events: [] })).toThrow(/at least one kind/);
    expect(() => new ProcConnector({ receiveBufferBytes: 10 })).toThrow(/receiveBufferBytes/);
  });
});
