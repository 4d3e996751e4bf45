/**
 * ProcConnector: a typed, lossless client of the Linux proc connector (NETLINK_CONNECTOR, group
 * CN_IDX_PROC; drivers/connector/cn_proc.c, include/uapi/linux/cn_proc.h).
 *
 *   const connector = new ProcConnector({ events: ['fork', 'exit'] });
 *   connector.on('events', (batch) => { for (const ev of batch) ... });   // kernel order
 *   connector.on('loss', ({ overruns, dropped }) => ...);                // cumulative
 *   connector.on('error', (err) => ...);
 *   await connector.open();      // subscribed, and the subscription confirmed by the kernel
 *   await connector.selfTest();  // a fork of our own came back
 *   ...
 *   await connector.close();     // unsubscribed, worker stopped, socket closed
 *
 * Threads: the main thread opens the socket and sends requests; a worker_thread
 * (receiveWorker.ts, hosted by workerHost.ts) reads it and posts raw datagrams in batches; the
 * main thread parses them (cnProcStructs.ts) and emits one 'events' batch per worker batch; the
 * subscription handshake lives in subscription.ts. An open connector keeps the process alive
 * (like a listening server) until close().
 *
 * The fast path (option `relay`, the daemon's): the worker signals the registrants of a
 * src/relay fork table itself, and posts datagrams to the main thread only while something here
 * needs them (open(), selfTest(), 'events' listeners): nobody pays for events nobody listens to.
 */
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { ForkRelayLink } from '../relay/forkTable';
import { PROC_EVENT_FORK, parseDatagram, type CnProcSink } from './cnProcStructs';
import { ProcConnectorError, noEventsError, toProcConnectorError } from './errors';
import { PROC_EVENT_KINDS, type ProcEvent, type ProcEventKind } from './events';
import { type CatchUpProbe, NICE_MAX, NICE_MIN } from './catchUpPriority';
import {
  CONTROL_CATCH_UPS,
  CONTROL_FORWARD,
  CONTROL_INTS,
  type ReceiveWorkerMessage,
} from './receiveWorker';
import { closeSocket, openProcConnectorSocket, readSocketDrops, sendMcastRequest } from './socket';
import { SubscriptionHandshake, type HandshakeHost, type SubscriptionMode } from './subscription';
import { ReceiveWorkerHost, forEachFrame } from './workerHost';

export type { SubscriptionMode } from './subscription';

/**
 * Default receive buffer (the SO_RCVBUFFORCE argument; the kernel doubles it for bookkeeping,
 * socket(7)). Measured on Linux 6.18: each queued proc event costs 832 bytes of sk_rmem_alloc
 * (skb truesize of a 76-byte datagram), so 32 MiB (64 MiB of sk_rcvbuf) holds a burst of about
 * 80,000 events unread: a 40,000-thread storm (fork + exit each) with the reader stalled. It is a
 * limit, not an allocation: memory is charged only while events wait in the queue.
 */
export const DEFAULT_RECEIVE_BUFFER_BYTES = 32 * 1024 * 1024;
/** How long open() waits for the kernel to confirm a subscription. */
export const DEFAULT_ACK_TIMEOUT_MS = 1000;
/** How long selfTest() waits for its own child's fork event. */
export const DEFAULT_SELF_TEST_TIMEOUT_MS = 2000;

export interface ProcConnectorOptions {
  /** Kinds to deliver (default: all). A subset is filtered by the kernel when it can (>= 6.6). */
  events?: readonly ProcEventKind[];
  /** SO_RCVBUFFORCE value (default DEFAULT_RECEIVE_BUFFER_BYTES). */
  receiveBufferBytes?: number;
  /** Always send the legacy 4-byte PROC_CN_MCAST_LISTEN and filter in user space. */
  legacyListen?: boolean;
  /** How long open() waits for the kernel to confirm the subscription (default 1000 ms). */
  ackTimeoutMs?: number;
  /**
   * Relay forks in the receive worker through this fork table (src/relay: Relay.link). Events
   * then reach the main thread only while 'events' has listeners (and during open() and
   * selfTest()); `counters.received` counts only those.
   */
  relay?: ForkRelayLink;
  /**
   * With a relay: the receive worker's nice value while its fast path is behind the kernel
   * (catchUpPriority.ts), -20 to 19; undefined (the default): never raised.
   */
  catchUpNice?: number;
}

/** Cumulative loss, as of an ENOBUFS (or close()). */
export interface LossNotice {
  /** ENOBUFS returned by recv: the number of times the socket overflowed. */
  overruns: number;
  /** Messages the kernel could not queue (SO_MEMINFO[SK_MEMINFO_DROPS]): the events lost. */
  dropped: number;
}

export interface ProcConnectorCounters extends LossNotice {
  /** Events delivered, per kind. */
  received: Record<ProcEventKind, number>;
  /**
   * Sequence numbers missing from the per-CPU cn_msg.seq streams. Counted only while the kernel
   * sends us every kind (the 'legacy' subscription): the counter numbers all kinds, so with a
   * kernel filter the numbers of filtered-out kinds look like gaps.
   */
  sequenceGaps: number;
  /** Datagrams or messages the parser could not read. */
  malformed: number;
  /** Times the relay's receive worker raised its priority to catch up (catchUpPriority.ts). */
  catchUps: number;
}

export type ProcConnectorEvents = {
  /** A batch of events in kernel order (per CPU), never empty. */
  events: [batch: ProcEvent[]];
  /** The socket overflowed and events were lost; counts are cumulative. Reading goes on. */
  loss: [notice: LossNotice];
  /** The receive worker failed; the connector no longer receives. */
  error: [err: ProcConnectorError];
};

type State = 'new' | 'opening' | 'open' | 'closing' | 'closed';

/** Events of one of our own children, watched while confirming the subscription. */
interface PidWatch {
  pid: number;
  forkSeen: boolean;
  /** Kinds of the child's events seen (fork: as the child; others: as the process). */
  kinds: ProcEventKind[];
  onFork: (() => void) | undefined;
}

function emptyReceived(): Record<ProcEventKind, number> {
  return { fork: 0, exec: 0, uid: 0, gid: 0, sid: 0, ptrace: 0, comm: 0, coredump: 0, exit: 0 };
}

export class ProcConnector extends EventEmitter<ProcConnectorEvents> {
  private readonly wanted: Record<ProcEventKind, boolean>;
  private readonly receiveBufferRequest: number;
  private readonly catchUpNice: number | undefined;
  private catchUpProbe: CatchUpProbe | undefined;
  private readonly ackTimeoutMs: number;
  /** The subscription handshake (./subscription.ts), talking to the kernel through us. */
  private readonly handshake: SubscriptionHandshake;
  private readonly relayLink: ForkRelayLink | undefined;
  /** Shared with the worker: CONTROL_FORWARD = 1 while datagrams must come to this thread. */
  private readonly control = new Int32Array(new SharedArrayBuffer(CONTROL_INTS * 4));
  private selfTesting = false;
  /** open() succeeded once: events may be emitted (until the worker's final drain on close). */
  private opened = false;

  private state: State = 'new';
  private openPromise: Promise<void> | undefined;
  private closePromise: Promise<void> | undefined;
  /** Start-up steps' undo actions; close() runs them in reverse. */
  private readonly undo: { name: string; run: () => void | Promise<void> }[] = [];

  private fd = -1;
  private mode: SubscriptionMode | undefined;
  private effectiveReceiveBuffer = 0;

  // Counters and parse state (main thread).
  private readonly received = emptyReceived();
  private overruns = 0;
  private dropped = 0;
  private sequenceGaps = 0;
  private malformed = 0;
  private trackSequence = false;
  /** Last cn_msg.seq seen per CPU (index), or undefined. */
  private readonly lastSeq: (number | undefined)[] = [];
  private batch: ProcEvent[] = [];
  private heldBatches: ProcEvent[][] = [];
  private readonly pidWatches: PidWatch[] = [];
  private readonly ackWaiters = new Map<number, (err: number) => void>();
  private readonly sink: CnProcSink;

  constructor(options: ProcConnectorOptions = {}) {
    super();
    const kinds = options.events ?? PROC_EVENT_KINDS;
    if (kinds.length === 0) {
      throw new ProcConnectorError('EINVAL', 'ProcConnector: events must name at least one kind');
    }
    const wanted = Object.fromEntries(PROC_EVENT_KINDS.map((k) => [k, false])) as Record<
      ProcEventKind,
      boolean
    >;
    for (const k of kinds) {
      if (!PROC_EVENT_KINDS.includes(k)) {
        throw new ProcConnectorError(
          'EINVAL',
          `ProcConnector: unknown event kind '${String(k)}' (kinds: ${PROC_EVENT_KINDS.join(', ')})`,
        );
      }
      wanted[k] = true;
    }
    this.wanted = wanted;
    const rcvbuf = options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES;
    if (!Number.isInteger(rcvbuf) || rcvbuf < 4096 || rcvbuf > 0x3fffffff) {
      throw new ProcConnectorError(
        'EINVAL',
        `ProcConnector: receiveBufferBytes must be an integer from 4096 to ${0x3fffffff}`,
      );
    }
    this.receiveBufferRequest = rcvbuf;
    this.ackTimeoutMs = options.ackTimeoutMs ?? DEFAULT_ACK_TIMEOUT_MS;
    if (!(this.ackTimeoutMs > 0 && this.ackTimeoutMs <= 60_000)) {
      throw new ProcConnectorError('EINVAL', 'ProcConnector: ackTimeoutMs must be from 1 to 60000');
    }
    const host: HandshakeHost = {
      send: (request) => sendMcastRequest(this.fd, request),
      waitForAck: (ack, timeoutMs) => this.waitForAck(ack, timeoutMs),
      drops: () => readSocketDrops(this.fd),
      spawnWatched: (timeoutMs, setsid) => this.spawnWatched(timeoutMs, setsid),
      unwatch: (watch) => this.unwatch(watch as PidWatch),
    };
    this.handshake = new SubscriptionHandshake(host, {
      kinds: [...new Set(kinds)],
      legacyListen: options.legacyListen ?? false,
      ackTimeoutMs: this.ackTimeoutMs,
      receiveBufferBytes: rcvbuf,
    });
    this.relayLink = options.relay;
    const nice = options.catchUpNice;
    if (nice !== undefined && !(Number.isInteger(nice) && nice >= NICE_MIN && nice <= NICE_MAX)) {
      throw new ProcConnectorError(
        'EINVAL',
        `ProcConnector: catchUpNice must be an integer from ${NICE_MIN} to ${NICE_MAX}`,
      );
    }
    this.catchUpNice = nice;
    this.updateForwarding();
    // 'newListener' and 'removeListener' are EventEmitter's own events, outside our event map.
    const emitter = this as EventEmitter;
    emitter.on('newListener', (name: string | symbol) => {
      if (name === 'events') Atomics.store(this.control, CONTROL_FORWARD, 1);
    });
    emitter.on('removeListener', () => this.updateForwarding());
    this.sink = {
      event: (event, seq) => this.onEvent(event, seq),
      ack: (ack, err, seq, cpu) => this.onAck(ack, err, seq, cpu),
      malformed: () => {
        this.malformed++;
      },
    };
  }

  /** A snapshot of the counters. */
  get counters(): ProcConnectorCounters {
    return {
      received: { ...this.received },
      overruns: this.overruns,
      dropped: this.dropped,
      sequenceGaps: this.sequenceGaps,
      malformed: this.malformed,
      catchUps: Atomics.load(this.control, CONTROL_CATCH_UPS),
    };
  }

  /** What the receive worker found of its catch-up priority at start, once open() has begun it. */
  get catchUp(): CatchUpProbe | undefined {
    return this.catchUpProbe;
  }

  /** How the kernel was subscribed, once open() has succeeded. */
  get subscription(): SubscriptionMode | undefined {
    return this.mode;
  }

  /** The socket's sk_rcvbuf as the kernel reports it (about twice receiveBufferBytes). */
  get receiveBufferBytes(): number {
    return this.effectiveReceiveBuffer;
  }

  /** The socket's file descriptor while open (for diagnostics), else -1. */
  get fileDescriptor(): number {
    return this.fd;
  }

  /**
   * Open the socket, start the receive worker and subscribe. With a subset of kinds, asks the
   * kernel to filter (Linux >= 6.6) and confirms that with children of our own (see
   * confirmFilter); if the kernel does not filter for us, falls back to the legacy listen (every
   * kind, filtered here), confirmed by the kernel's ACK. Events received meanwhile are emitted
   * once the subscription is confirmed: attach 'events' listeners before calling open() to get
   * them. Rejects with a ProcConnectorError whose message says what is wrong and what to do.
   */
  async open(): Promise<void> {
    if (this.state !== 'new') {
      throw new ProcConnectorError('EINVAL', `ProcConnector.open(): already ${this.state}`);
    }
    this.state = 'opening';
    this.openPromise = this.start();
    try {
      await this.openPromise;
      this.state = 'open';
      this.opened = true;
      this.updateForwarding();
      // Events that came while the subscription was being confirmed, in order.
      for (const batch of this.heldBatches.splice(0)) this.emit('events', batch);
    } catch (err) {
      this.heldBatches = [];
      this.state = 'closing';
      await this.teardown(); // its own failures matter less than why open() failed
      this.state = 'closed';
      throw toProcConnectorError(err);
    }
  }

  /**
   * Prove that events reach us: spawn a child (/bin/true) and wait, at most `timeoutMs`, for its
   * fork event. The kernel sends nothing to a listener outside the initial pid or user namespace
   * and says nothing about it; this turns that silence into an error naming the cause and the fix.
   */
  async selfTest(timeoutMs: number = DEFAULT_SELF_TEST_TIMEOUT_MS): Promise<void> {
    if (this.state !== 'open') {
      throw new ProcConnectorError('EINVAL', `ProcConnector.selfTest(): not open (${this.state})`);
    }
    // A filtered subscription without fork is widened for the test, then narrowed again.
    const handshake = this.handshake;
    const widen = this.mode === 'filtered' && (handshake.kernelMask & PROC_EVENT_FORK) === 0;
    if (widen) handshake.requestFiltered(handshake.kernelMask | PROC_EVENT_FORK);
    this.selfTesting = true;
    this.updateForwarding();
    try {
      const outcome = await handshake.confirmByFork(timeoutMs);
      if (outcome === 'overflow') throw handshake.overflowError('the self-test');
      if (outcome === 'silent') {
        throw noEventsError(
          `the proc connector delivered no event for a fork of our own within ${timeoutMs} ms`,
        );
      }
    } finally {
      this.selfTesting = false;
      this.updateForwarding();
      if (widen && this.state === 'open') handshake.requestFiltered(handshake.kernelMask);
    }
  }

  /**
   * Unsubscribe (PROC_CN_MCAST_IGNORE), stop the worker, close the eventfd and the socket: the
   * start-up steps undone in reverse. Idempotent; safe to call while open() is in progress.
   */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      if (this.openPromise) await this.openPromise.catch(() => undefined);
      if (this.state === 'closed' || this.state === 'new') {
        this.state = 'closed';
        return;
      }
      this.state = 'closing';
      const failure = await this.teardown();
      this.state = 'closed';
      if (failure !== undefined) throw toProcConnectorError(failure);
    })();
    return this.closePromise;
  }

  // -------------------------------------------------------------------------------------------
  // Start-up and teardown

  private async start(): Promise<void> {
    const opened = openProcConnectorSocket(this.receiveBufferRequest);
    this.fd = opened.fd;
    this.effectiveReceiveBuffer = opened.receiveBufferBytes;
    this.undo.push({
      name: 'close socket',
      run: () => {
        closeSocket(this.fd);
        this.fd = -1;
      },
    });

    const host = new ReceiveWorkerHost({
      fd: this.fd,
      control: this.control.buffer as SharedArrayBuffer,
      relay: this.relayLink,
      catchUpNice: this.catchUpNice,
      // Looked up at each message, so that a test can wrap onWorkerMessage.
      onMessage: (msg) => this.onWorkerMessage(msg),
      onFailure: (message, cause) => {
        if (this.state === 'open' || this.state === 'opening') this.emitError(message, cause);
      },
    });
    this.undo.push({ name: 'stop worker', run: () => host.stop() });
    this.catchUpProbe = await host.start();

    // From here on the kernel may count us as a listener: undo with IGNORE whatever we asked.
    this.undo.push({
      name: 'unsubscribe',
      run: () => this.handshake.unsubscribe(),
    });
    await this.subscribe();
  }

  private async subscribe(): Promise<void> {
    this.mode = await this.handshake.subscribe();
    // In legacy mode every kind is numbered in the per-CPU sequence and every one reaches us
    // (unless the worker relays and forwards only on demand: then the numbers seen have holes).
    this.trackSequence = this.mode === 'legacy' && this.relayLink === undefined;
  }

  /** Run every undo step, newest first; returns the first failure (after running them all). */
  private async teardown(): Promise<unknown> {
    let first: unknown;
    for (let step = this.undo.pop(); step; step = this.undo.pop()) {
      try {
        await step.run();
      } catch (err) {
        // Keep undoing: a failed IGNORE must not leave the worker or the fds behind.
        first ??= err;
      }
    }
    for (const waiter of this.ackWaiters.values()) waiter(-1);
    this.ackWaiters.clear();
    this.mode = undefined;
    return first;
  }

  // -------------------------------------------------------------------------------------------
  // Confirmation

  /**
   * Spawn /bin/true (in a new session if `setsid`) and wait up to `timeoutMs` for its fork
   * event; always reaps the child before returning. Returns the child's watch, still registered
   * (it goes on collecting the kinds of the child's events as they are parsed) until the caller
   * passes it to unwatch(); it is unregistered here only if this throws.
   */
  private async spawnWatched(timeoutMs: number, setsid: boolean): Promise<PidWatch> {
    const child = spawn('/bin/true', [], { stdio: 'ignore', detached: setsid });
    const exited = new Promise<void>((resolve) => {
      child.once('close', () => resolve());
      child.once('error', () => resolve());
    });
    const pid = child.pid;
    if (pid === undefined) {
      await exited;
      throw new ProcConnectorError(
        'ENOENT',
        'the proc connector self-test could not spawn /bin/true; install coreutils',
      );
    }
    const watch: PidWatch = { pid, forkSeen: false, kinds: [], onFork: undefined };
    this.pidWatches.push(watch);
    this.updateForwarding();
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve) => {
        watch.onFork = resolve;
        timer = setTimeout(resolve, timeoutMs);
      });
      await exited;
    } catch (err) {
      this.unwatch(watch);
      throw err;
    } finally {
      clearTimeout(timer);
      watch.onFork = undefined;
    }
    return watch;
  }

  private unwatch(watch: PidWatch): void {
    const at = this.pidWatches.indexOf(watch);
    if (at >= 0) this.pidWatches.splice(at, 1);
    this.updateForwarding();
  }

  /**
   * Tell the worker whether datagrams must come here: always without a relay; with one, while
   * the handshake or self-test runs (ACKs, our own children's events) or 'events' has listeners.
   */
  private updateForwarding(): void {
    const needed =
      this.relayLink === undefined ||
      this.state === 'new' ||
      this.state === 'opening' ||
      this.selfTesting ||
      this.pidWatches.length > 0 ||
      this.ackWaiters.size > 0 ||
      this.listenerCount('events') > 0;
    Atomics.store(this.control, CONTROL_FORWARD, needed ? 1 : 0);
  }

  /** Resolves with the ACK's err, or undefined after `timeoutMs`. */
  private waitForAck(ack: number, timeoutMs: number): Promise<number | undefined> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.ackWaiters.delete(ack + 1);
        resolve(undefined);
      }, timeoutMs);
      this.ackWaiters.set(ack + 1, (err) => {
        clearTimeout(timer);
        this.ackWaiters.delete(ack + 1);
        resolve(err < 0 ? undefined : err);
      });
    });
  }

  // -------------------------------------------------------------------------------------------
  // Receiving (main thread)

  private onWorkerMessage(msg: ReceiveWorkerMessage): void {
    switch (msg.type) {
      case 'batch':
        this.onBatch(msg.buffer);
        break;
      case 'loss':
        this.overruns = msg.overruns;
        this.dropped = msg.dropped;
        this.emit('loss', { overruns: msg.overruns, dropped: msg.dropped });
        break;
      case 'stopped': {
        const lost = msg.dropped !== this.dropped || msg.overruns !== this.overruns;
        this.overruns = msg.overruns;
        this.dropped = msg.dropped;
        if (lost) this.emit('loss', { overruns: msg.overruns, dropped: msg.dropped });
        break;
      }
      case 'relay':
        this.relayLink?.notice(msg.notice);
        break;
      case 'fatal':
        this.emitError(`the receive worker stopped: ${msg.message}`);
        break;
      case 'ready':
        break;
    }
  }

  private onBatch(buffer: ArrayBuffer): void {
    this.batch = [];
    const whole = forEachFrame(buffer, (view, off, len) =>
      parseDatagram(view, off, len, this.sink),
    );
    if (!whole) this.malformed++;
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 0) return;
    // Until open() has confirmed the subscription, hold events back: a socket the kernel ignored
    // (outside the initial namespaces) still hears other listeners' events, which must not look
    // like a working subscription. open() emits them once it succeeds and drops them if it fails.
    // After a failed open() the worker's last drain (teardown) still posts what the ignored
    // socket heard: never emit those either.
    if (this.state === 'opening') this.heldBatches.push(batch);
    else if (this.opened) this.emit('events', batch);
  }

  private onEvent(event: ProcEvent, seq: number): void {
    if (this.trackSequence) this.trackSeq(event.cpu, seq);
    if (this.pidWatches.length > 0) this.watchPids(event);
    if (!this.wanted[event.kind]) return;
    this.received[event.kind]++;
    this.batch.push(event);
  }

  private onAck(ack: number, err: number, seq: number, cpu: number): void {
    if (this.trackSequence && cpu !== 0xffffffff) this.trackSeq(cpu, seq);
    this.ackWaiters.get(ack)?.(err);
  }

  private watchPids(event: ProcEvent): void {
    for (const watch of this.pidWatches) {
      if (event.kind === 'fork') {
        if (event.childTgid !== watch.pid || event.parentTgid !== process.pid) continue;
        watch.forkSeen = true;
        watch.kinds.push('fork');
        watch.onFork?.();
      } else if (event.processTgid === watch.pid) {
        watch.kinds.push(event.kind);
      }
    }
  }

  /** cn_msg.seq is per CPU: count the numbers skipped since the last message of this CPU. */
  private trackSeq(cpu: number, seq: number): void {
    if (cpu >= 65536) return;
    const last = this.lastSeq[cpu];
    this.lastSeq[cpu] = seq;
    if (last === undefined) return;
    const missing = (seq - last - 1) >>> 0;
    // A huge "gap" is the counter moving backwards (never seen; e.g. CPU hotplug): not a loss.
    if (missing !== 0 && missing < 0x80000000) this.sequenceGaps += missing;
  }

  private emitError(message: string, cause?: unknown): void {
    this.emit('error', new ProcConnectorError('EWORKER', `proc connector: ${message}`, { cause }));
  }
}
