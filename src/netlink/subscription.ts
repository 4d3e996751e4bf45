/**
 * The proc connector subscription handshake: which request to send, how the kernel's answer (or
 * silence) is read, and when to fall back. It talks to the kernel only through a small host
 * interface (send a request, wait for an ACK, read the drop counter, watch a child of ours), so
 * that each kernel behaviour can be driven without root (test/netlink/subscription.test.ts):
 *
 * - Linux >= 6.6 parses a struct proc_input (mcast_op + event_type) and filters per socket;
 * - Linux < 6.6 takes only the bare 4-byte mcast_op and ignores the 8-byte proc_input silently
 *   (cn_proc_mcast_ctl() returns before subscribing or acknowledging);
 * - a requester outside the initial pid or user namespace is ignored by every kernel, silently,
 *   although its socket, bound to the group, still hears every event whenever someone else
 *   listens (cn_filter() passes a socket whose sk_user_data was never set).
 * (drivers/connector/cn_proc.c, Linux 6.6 to 6.18.)
 */
import { randomInt } from 'node:crypto';
import {
  PROC_CN_MCAST_IGNORE,
  PROC_CN_MCAST_LISTEN,
  PROC_EVENT_ALL,
  PROC_EVENT_BIT,
  PROC_EVENT_FORK,
  eventTypeMask,
  type McastRequest,
} from './cnProcStructs';
import { ProcConnectorError, noEventsError, toProcConnectorError } from './errors';
import { PROC_EVENT_KINDS, type ProcEventKind } from './events';

/** Tries of a confirmation that the socket's overflow spoiled. */
export const CONFIRM_ATTEMPTS = 3;

/**
 * How the kernel was asked for events:
 * - 'filtered': struct proc_input with an event_type mask (Linux >= 6.6). First a proc_input
 *   asking for PROC_EVENT_ALL, confirmed by our ACK (the kernel's positive answer: it parsed the
 *   proc_input of a requester in the initial namespaces); then narrowed to the mask, which is
 *   checked with our own children's events: their forks arrive, their events of kinds outside
 *   the filter do not (a filtered subscriber is sent no ACK);
 * - 'legacy': the bare 4-byte PROC_CN_MCAST_LISTEN (every kind), confirmed by our ACK; kinds not
 *   asked for are dropped in user space.
 */
export type SubscriptionMode = 'filtered' | 'legacy';

/** The events of one of our own children, collected while it is watched. */
export interface ChildWatch {
  readonly forkSeen: boolean;
  /** Kinds of the child's events seen (fork: as the child; others: as the process). */
  readonly kinds: readonly ProcEventKind[];
}

/** What the handshake needs from the connector (or from a test's fake kernel). */
export interface HandshakeHost {
  /** Send a PROC_CN_MCAST_LISTEN/IGNORE request. */
  send(request: McastRequest): void;
  /** Resolves with the err of the ACK answering `ack` (cn_msg.ack + 1), or undefined. */
  waitForAck(ack: number, timeoutMs: number): Promise<number | undefined>;
  /** The socket's cumulative drop counter (SO_MEMINFO[SK_MEMINFO_DROPS]). */
  drops(): number;
  /**
   * Spawn /bin/true (in a new session if `setsid`), wait up to `timeoutMs` for its fork event
   * and reap it; the watch keeps collecting the child's events until unwatch().
   */
  spawnWatched(timeoutMs: number, setsid: boolean): Promise<ChildWatch>;
  unwatch(watch: ChildWatch): void;
}

export interface HandshakeOptions {
  kinds: readonly ProcEventKind[];
  /** Always the legacy 4-byte listen. */
  legacyListen: boolean;
  ackTimeoutMs: number;
  /** For the overflow message: the receive buffer asked for. */
  receiveBufferBytes: number;
  /** The cn_msg.ack of a request (default: random, so that our ACK is told from others'). */
  ackCookie?: () => number;
}

/** Kinds our confirmation child makes (fork, sid via setsid, exec, exit) outside `mask`. */
function probeKinds(mask: number): ProcEventKind[] {
  return (['sid', 'exec', 'exit'] as const).filter((k) => (mask & PROC_EVENT_BIT[k]) === 0);
}

export class SubscriptionHandshake {
  /** proc_input.event_type currently in force ('filtered' mode). */
  kernelMask = 0;
  private requestSeq = 0;
  private readonly allKinds: boolean;
  private readonly ackCookie: () => number;

  constructor(
    private readonly host: HandshakeHost,
    private readonly options: HandshakeOptions,
  ) {
    this.allKinds = PROC_EVENT_KINDS.every((k) => options.kinds.includes(k));
    this.ackCookie = options.ackCookie ?? (() => randomInt(1, 0x7ffffffe));
  }

  /**
   * Subscribe. With a subset of kinds, asks the kernel to filter (Linux >= 6.6) and confirms
   * that with children of our own (see confirmFilter); if the kernel does not filter for us,
   * falls back to the legacy listen (every kind), confirmed by the kernel's ACK. Rejects with
   * ENOEVENTS when the kernel answers nothing (outside the initial namespaces).
   */
  async subscribe(): Promise<SubscriptionMode> {
    const mask = eventTypeMask(this.options.kinds);
    if (
      !this.allKinds &&
      !this.options.legacyListen &&
      probeKinds(mask | PROC_EVENT_FORK).length > 0
    ) {
      // Positive evidence first: a proc_input asking for every kind is ACKed, and only by a
      // kernel that parses proc_input (>= 6.6) for a requester in the initial namespaces; an
      // ignored request gets no answer at all. Events seen meanwhile prove nothing: see
      // listenAcked(). Without the ACK, the legacy listen below tells Linux < 6.6 (ACKed) from
      // an ignored socket (not ACKed: ENOEVENTS).
      if (await this.listenAcked(PROC_EVENT_ALL)) {
        // Until confirmed, fork is in the filter too: the confirmation watches our own fork.
        this.requestFiltered(mask | PROC_EVENT_FORK);
        const outcome = await this.confirmFilter(this.options.ackTimeoutMs);
        if (outcome === 'filtered') {
          if ((mask & PROC_EVENT_FORK) === 0) this.requestFiltered(mask);
          return 'filtered';
        }
        if (outcome === 'overflow') throw this.overflowError('confirming the subscription');
        // The kernel took the proc_input but did not filter for us: ask for every kind again.
        this.kernelMask = 0;
      }
    }
    if (!(await this.listenAcked(undefined))) {
      throw noEventsError(
        `the kernel did not answer our proc connector listen request within ${this.options.ackTimeoutMs} ms`,
      );
    }
    return 'legacy';
  }

  /**
   * PROC_CN_MCAST_LISTEN for every kind, confirmed by the kernel's ACK (cn_msg.ack = ours + 1):
   * the bare 4-byte form if `eventType` is undefined, else a struct proc_input with that
   * event_type, which must be PROC_EVENT_ALL: cn_filter() drops the ACK (what = PROC_EVENT_NONE)
   * for any narrower filter (drivers/connector/cn_proc.c, Linux 6.6 to 6.18). Resolves true once
   * ACKed, false if the kernel stayed silent (nothing lost meanwhile); rejects on an ACK with an
   * error or when the socket overflowed on every attempt.
   *
   * The ACK is the proof that the kernel took the request: cn_proc_mcast_ctl() returns without
   * acting and without an answer for a requester outside the initial pid or user namespace (and
   * Linux < 6.6 ignores an 8-byte proc_input likewise), yet such a socket, bound to the group,
   * still receives every event whenever proc_event_num_listeners > 0: seeing events, even our
   * own, proves nothing.
   */
  async listenAcked(eventType: number | undefined): Promise<boolean> {
    for (let attempt = 0; attempt < CONFIRM_ATTEMPTS; attempt++) {
      const dropsBefore = this.host.drops();
      if (attempt > 0 && eventType === undefined) {
        // Kernels before 6.6 count every LISTEN (and IGNORE) in proc_event_num_listeners:
        // balance a possibly counted earlier LISTEN before asking again. (Since 6.6 a repeated
        // LISTEN is not counted again, and before 6.6 a proc_input is not counted at all.)
        this.host.send({ op: PROC_CN_MCAST_IGNORE, seq: this.nextSeq(), ack: 0 });
      }
      const ack = this.ackCookie();
      const answered = this.host.waitForAck(ack, this.options.ackTimeoutMs);
      this.host.send({ op: PROC_CN_MCAST_LISTEN, eventType, seq: this.nextSeq(), ack });
      const err = await answered;
      if (err === 0) return true;
      if (err !== undefined) throw toProcConnectorError(ackError(err));
      if (this.host.drops() === dropsBefore) return false;
    }
    throw this.overflowError('confirming the subscription');
  }

  /** A proc_input LISTEN with this event_type mask (no ACK comes for a narrower filter). */
  requestFiltered(mask: number): void {
    this.kernelMask = mask >>> 0;
    this.host.send({
      op: PROC_CN_MCAST_LISTEN,
      eventType: this.kernelMask,
      seq: this.nextSeq(),
      ack: 0,
    });
  }

  /** PROC_CN_MCAST_IGNORE: undo whatever was asked. */
  unsubscribe(): void {
    this.host.send({ op: PROC_CN_MCAST_IGNORE, seq: this.nextSeq(), ack: 0 });
  }

  /**
   * Fork a child and wait for its event, trying again while the socket overflows: an event lost
   * to a full queue is not the kernel ignoring us. 'silent' means nothing was lost and nothing
   * came.
   */
  async confirmByFork(timeoutMs: number): Promise<'seen' | 'silent' | 'overflow'> {
    for (let attempt = 0; attempt < CONFIRM_ATTEMPTS; attempt++) {
      const dropsBefore = this.host.drops();
      const watch = await this.host.spawnWatched(timeoutMs, false);
      this.host.unwatch(watch);
      if (watch.forkSeen) return 'seen';
      if (this.host.drops() === dropsBefore) return 'silent';
    }
    return 'overflow';
  }

  /**
   * Check that the filter asked for is in force (a filtered subscriber gets no ACK; that the
   * kernel took our proc_input at all was proven before, by listenAcked()). Child A (spawned with
   * setsid(), so it makes fork, sid, exec and exit events) must show its fork; then child B is
   * spawned after A was reaped, and once B's fork has been parsed, so has every event of A that
   * was queued before A was reaped: one receive queue, read in order by the worker and parsed in
   * order. A's sid and exec events are such events (setsid() and execve() run in A before it
   * exits); its exit event may not be (do_exit() calls proc_exit_connector() after exit_notify()
   * has made A reapable), so it can only add evidence. A's watch therefore stays registered until
   * B's fork is here: the 'close' of A (its reaping) can come before the worker has even read A's
   * events (a loaded machine), and events of A parsed after its watch was gone were lost
   * evidence, which once confirmed a filter that was not there. If any of A's events has a kind
   * outside the filter, the filter is not in force.
   */
  async confirmFilter(
    timeoutMs: number,
  ): Promise<'filtered' | 'unfiltered' | 'silent' | 'overflow'> {
    for (let attempt = 0; attempt < CONFIRM_ATTEMPTS; attempt++) {
      const dropsBefore = this.host.drops();
      const a = await this.host.spawnWatched(timeoutMs, true);
      try {
        const b = a.forkSeen ? await this.host.spawnWatched(timeoutMs, false) : undefined;
        if (b) this.host.unwatch(b);
        if (a.forkSeen && b?.forkSeen) {
          const leaked = a.kinds.some((k) => (this.kernelMask & PROC_EVENT_BIT[k]) === 0);
          return leaked ? 'unfiltered' : 'filtered';
        }
      } finally {
        this.host.unwatch(a);
      }
      if (this.host.drops() === dropsBefore) return 'silent';
    }
    return 'overflow';
  }

  overflowError(during: string): ProcConnectorError {
    return new ProcConnectorError(
      'ENOBUFS',
      `the proc connector socket overflowed ${CONFIRM_ATTEMPTS} times while ${during}, so the ` +
        `kernel's answer was lost: the receive buffer (${this.options.receiveBufferBytes} bytes) is too ` +
        `small for this machine's event rate; raise receiveBufferBytes`,
    );
  }

  private nextSeq(): number {
    this.requestSeq = (this.requestSeq + 1) >>> 0;
    return this.requestSeq;
  }
}

/** An ACK with a non-zero err, as the errno of the request it answers. */
function ackError(err: number): Error {
  const code = err === 1 ? 'EPERM' : err === 22 ? 'EINVAL' : `E${err}`;
  const e = new Error(`PROC_CN_MCAST_LISTEN answered ${code}`) as Error & {
    code: string;
    syscall: string;
    errno: number;
  };
  e.code = code;
  e.syscall = 'PROC_CN_MCAST_LISTEN';
  e.errno = -err;
  return e;
}
