/**
 * The subscription handshake against fake kernels (no root, no socket): each behaviour the
 * handshake must tell apart, as drivers/connector/cn_proc.c has it.
 *
 * - 'filtering' (Linux >= 6.6): proc_input is parsed, ACKed when event_type is PROC_EVENT_ALL,
 *   and its mask filters this socket's events;
 * - 'legacy' (< 6.6): only the 4-byte mcast_op is understood and ACKed; an 8-byte proc_input is
 *   ignored silently, and every kind is delivered;
 * - 'ignored' (outside the initial namespaces): nothing is ACKed, yet every event is heard;
 * - 'unfiltered': proc_input is ACKed but the mask is not applied (must fall back);
 * - 'overflowing': every answer is lost to a full socket (drops keep rising).
 */
import {
  PROC_CN_MCAST_IGNORE,
  PROC_CN_MCAST_LISTEN,
  PROC_EVENT_ALL,
  PROC_EVENT_BIT,
  type McastRequest,
} from '../../src/netlink/cnProcStructs';
import { PROC_EVENT_KINDS, type ProcEventKind } from '../../src/netlink/events';
import {
  SubscriptionHandshake,
  type ChildWatch,
  type HandshakeHost,
} from '../../src/netlink/subscription';

type Behaviour = 'filtering' | 'legacy' | 'ignored' | 'unfiltered' | 'overflowing';

class FakeKernel implements HandshakeHost {
  readonly requests: McastRequest[] = [];
  /** The mask this socket is filtered by (undefined: every kind). */
  private mask: number | undefined;
  private readonly pendingAcks = new Map<number, (err: number | undefined) => void>();
  private dropCount = 0;

  constructor(private readonly behaviour: Behaviour) {}

  send(request: McastRequest): void {
    this.requests.push(request);
    if (request.op !== PROC_CN_MCAST_LISTEN) return;
    const b = this.behaviour;
    if (b === 'ignored') return;
    if (b === 'overflowing') {
      this.dropCount++;
      return;
    }
    const procInput = request.eventType !== undefined;
    if (procInput && b === 'legacy') return; // < 6.6: the 8-byte form is not understood
    if (procInput && b === 'filtering') this.mask = request.eventType;
    if (!procInput) this.mask = undefined;
    // cn_filter() drops the ACK for a narrower filter; the 4-byte form is always ACKed.
    if (!procInput || request.eventType === PROC_EVENT_ALL) {
      this.pendingAcks.get(request.ack + 1)?.(0);
    }
  }

  waitForAck(ack: number, timeoutMs: number): Promise<number | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(undefined), timeoutMs);
      this.pendingAcks.set(ack + 1, (err) => {
        clearTimeout(timer);
        this.pendingAcks.delete(ack + 1);
        resolve(err);
      });
    });
  }

  drops(): number {
    return this.dropCount;
  }

  /** Our child's events as this socket would see them (a setsid child also makes sid). */
  spawnWatched(_timeoutMs: number, setsid: boolean): Promise<ChildWatch> {
    const made: ProcEventKind[] = setsid
      ? ['fork', 'sid', 'exec', 'exit']
      : ['fork', 'exec', 'exit'];
    if (this.behaviour === 'overflowing') {
      this.dropCount += made.length;
      return Promise.resolve({ forkSeen: false, kinds: [] });
    }
    const mask = this.mask;
    const kinds = made.filter((k) => mask === undefined || (mask & PROC_EVENT_BIT[k]) !== 0);
    return Promise.resolve({ forkSeen: kinds.includes('fork'), kinds });
  }

  unwatch(): void {}
}

function handshake(kernel: FakeKernel, kinds: ProcEventKind[], legacyListen = false) {
  let cookie = 100;
  return new SubscriptionHandshake(kernel, {
    kinds,
    legacyListen,
    ackTimeoutMs: 50,
    receiveBufferBytes: 4096,
    ackCookie: () => (cookie += 100),
  });
}

const shape = (r: McastRequest): string =>
  `${r.op === PROC_CN_MCAST_IGNORE ? 'IGNORE' : 'LISTEN'}${r.eventType === undefined ? '' : `(0x${r.eventType.toString(16)})`}`;

describe('Linux >= 6.6 (proc_input parsed and applied)', () => {
  test('a subset is filtered in the kernel: ALL (ACKed), then the mask with fork, then the mask', async () => {
    const kernel = new FakeKernel('filtering');
    const h = handshake(kernel, ['exit']);
    await expect(h.subscribe()).resolves.toBe('filtered');
    expect(kernel.requests.map(shape)).toEqual([
      `LISTEN(0x${PROC_EVENT_ALL.toString(16)})`,
      'LISTEN(0x80000001)', // exit + fork while our own fork confirms the filter
      'LISTEN(0x80000000)',
    ]);
    expect(h.kernelMask).toBe(0x80000000);
  });

  test('fork only stays fork only', async () => {
    const kernel = new FakeKernel('filtering');
    const h = handshake(kernel, ['fork']);
    await expect(h.subscribe()).resolves.toBe('filtered');
    expect(kernel.requests.map(shape).at(-1)).toBe('LISTEN(0x1)');
  });

  test('every kind, or legacyListen, is the 4-byte listen', async () => {
    const kernel = new FakeKernel('filtering');
    await expect(handshake(kernel, [...PROC_EVENT_KINDS]).subscribe()).resolves.toBe('legacy');
    const forced = new FakeKernel('filtering');
    await expect(handshake(forced, ['fork'], true).subscribe()).resolves.toBe('legacy');
    expect(forced.requests.map(shape)).toEqual(['LISTEN']);
  });
});

test('Linux < 6.6: the proc_input goes unanswered, the legacy listen is ACKed', async () => {
  const kernel = new FakeKernel('legacy');
  await expect(handshake(kernel, ['fork']).subscribe()).resolves.toBe('legacy');
  expect(kernel.requests.map(shape)).toEqual([
    `LISTEN(0x${PROC_EVENT_ALL.toString(16)})`,
    'LISTEN',
  ]);
});

test('a kernel that ACKs proc_input but does not filter: back to the legacy listen', async () => {
  const kernel = new FakeKernel('unfiltered');
  const h = handshake(kernel, ['fork']);
  await expect(h.subscribe()).resolves.toBe('legacy');
  expect(h.kernelMask).toBe(0);
  expect(kernel.requests.map(shape).at(-1)).toBe('LISTEN');
});

test('an ignored request (outside the initial namespaces): ENOEVENTS, though events are heard', async () => {
  const kernel = new FakeKernel('ignored');
  await expect(handshake(kernel, ['fork']).subscribe()).rejects.toMatchObject({
    code: 'ENOEVENTS',
  });
  await expect(handshake(new FakeKernel('ignored'), ['fork']).confirmByFork(50)).resolves.toBe(
    'seen',
  );
});

test('answers lost to overflow every time: ENOBUFS naming the receive buffer, IGNORE between tries', async () => {
  const kernel = new FakeKernel('overflowing');
  await expect(handshake(kernel, ['fork'], true).subscribe()).rejects.toMatchObject({
    code: 'ENOBUFS',
    message: expect.stringContaining('receive buffer (4096 bytes)'),
  });
  expect(kernel.requests.map(shape)).toEqual(['LISTEN', 'IGNORE', 'LISTEN', 'IGNORE', 'LISTEN']);
});
