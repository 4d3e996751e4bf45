/**
 * One FUSE connection: the /dev/fuse fd of a mount, its reader (./fuseReader.ts), the FUSE_INIT
 * handshake, the request loop and the replies.
 *
 * Requests arrive from the reader in kernel order and are handled one at a time on the main
 * thread by the filesystem's synchronous handler, each before the next is read; each reply is one
 * write(2) of header + body (fs/fuse/dev.c fuse_dev_do_write takes a reply only whole). The
 * session itself answers INIT and DESTROY and consumes the requests that take no reply: FORGET,
 * BATCH_FORGET and INTERRUPT.
 *
 * INTERRUPT: the kernel queues one only for a request userspace has already read (FR_SENT,
 * fs/fuse/dev.c request_wait_answer -> queue_interrupt), so it always reaches us after that
 * request, which our synchronous handlers have answered by then; the protocol needs no reply for
 * an interrupt whose request is gone (libfuse answers EAGAIN only to ask for a resend while the
 * request is still running, which never happens here). It is counted and dropped.
 */
import { EventEmitter } from 'node:events';
import { Errno, close as closeFd, writeOrErrno } from '../native/libc';
import {
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_KERNEL_MINOR,
  IN_HEADER,
  InitFlag,
  Opcode,
  encodeInitOut,
  encodeReply,
  parseInitIn,
  parseRequestHeader,
  type InitIn,
  type RequestHeader,
} from './fuseProtocol';
import { FuseReader } from './fuseReader';

/** A request as a filesystem handler sees it: its header and the bytes after the header. */
export interface FuseRequest {
  header: RequestHeader;
  body: Buffer;
}

/** A handler's answer: a positive errno, or the reply body (possibly empty). */
export type FuseReply = { errno: number } | { body: Buffer };

export interface FuseFilesystem {
  /** Answer one request (anything but INIT, DESTROY, FORGET, BATCH_FORGET, INTERRUPT). */
  handle(request: FuseRequest): FuseReply;
}

export interface FuseSessionOptions {
  /** fuse_init_out.max_write. */
  maxWrite: number;
  /** Seconds (1..65535) the kernel may wait for any reply before aborting the connection; 0: none. */
  requestTimeoutSeconds: number;
  /**
   * The fd is a connection another process initialised and served (handed over through the
   * systemd fd store): no FUSE_INIT will come, and this is what it settled.
   */
  adopted?: FuseProtocolInfo;
}

/**
 * How many request ids below the first one an adopted session reads are answered EIO (see
 * answerOrphans). The previous server can have read at most as many requests as it had
 * queued for its main thread when it died; ids advance by FUSE_REQ_ID_STEP = 2.
 */
export const ORPHAN_SCAN_REQUESTS = 1024;
/** fs/fuse/fuse_dev_i.h (Linux 6.x): ordinary requests have even ids, interrupts set bit 0. */
const FUSE_REQ_ID_STEP = 2n;
const FUSE_INT_REQ_BIT = 1n;

/** What FUSE_INIT settled. */
export interface FuseProtocolInfo {
  kernelMajor: number;
  kernelMinor: number;
  /** The minor both sides now speak: min(kernel's, FUSE_KERNEL_MINOR_VERSION). */
  minor: number;
  /** The request timeout asked for, or 0 when none was (not asked, or the kernel lacks it). */
  requestTimeoutSeconds: number;
  /** The kernel offers FUSE_REQUEST_TIMEOUT (7.43, Linux 6.14). */
  kernelHasRequestTimeout: boolean;
}

export interface FuseSessionEvents {
  /** Something went wrong that the session survived (a reply the kernel refused, a bad request). */
  problem: [message: string, error?: unknown];
}

/** The kernel refused or could not be answered during FUSE_INIT. */
export class FuseInitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FuseInitError';
  }
}

/**
 * The reader's read(2) buffer: libfuse's size (a 128 KiB write plus a page), far above what a
 * request can need once max_write is negotiated, and safe for the INIT request, which the kernel
 * sends before any max_write is known.
 */
const READ_BUFFER_BYTES = 128 * 1024 + 4096;

/**
 * The negotiation of fuse.h's "Version negotiation" section, as a pure function of the kernel's
 * fuse_init_in: the reply to send, and whether INIT is done (a kernel with a newer major sends a
 * second INIT after our reply), or a refusal.
 */
export function negotiateInit(
  init: InitIn,
  options: FuseSessionOptions,
):
  | { kind: 'reply'; reply: Buffer; done: FuseProtocolInfo }
  | { kind: 'retry'; reply: Buffer }
  | { kind: 'refuse'; message: string } {
  const ours = {
    major: FUSE_KERNEL_VERSION,
    minor: FUSE_KERNEL_MINOR_VERSION,
    maxReadahead: 0,
    flags: 0n,
    maxWrite: options.maxWrite,
    requestTimeout: 0,
  };
  if (init.major > FUSE_KERNEL_VERSION) {
    // "reply with the major version it supports, ... expect a new INIT message".
    return { kind: 'retry', reply: encodeInitOut(ours) };
  }
  if (init.major < FUSE_KERNEL_VERSION || init.minor < FUSE_MIN_KERNEL_MINOR) {
    return {
      kind: 'refuse',
      message:
        `the kernel speaks FUSE protocol ${init.major}.${init.minor} and relayfork needs ` +
        `${FUSE_KERNEL_VERSION}.${FUSE_MIN_KERNEL_MINOR} or later: run it on Linux 6.1 or later`,
    };
  }
  const kernelHasRequestTimeout = (init.flags & InitFlag.FUSE_REQUEST_TIMEOUT) !== 0n;
  const timeout = kernelHasRequestTimeout ? options.requestTimeoutSeconds : 0;
  const minor = Math.min(init.minor, FUSE_KERNEL_MINOR_VERSION);
  const reply = encodeInitOut({
    ...ours,
    minor,
    maxReadahead: init.maxReadahead,
    flags: timeout > 0 ? InitFlag.FUSE_REQUEST_TIMEOUT : 0n,
    requestTimeout: timeout,
  });
  return {
    kind: 'reply',
    reply,
    done: {
      kernelMajor: init.major,
      kernelMinor: init.minor,
      minor,
      requestTimeoutSeconds: timeout,
      kernelHasRequestTimeout,
    },
  };
}

export class FuseSession extends EventEmitter<FuseSessionEvents> {
  /** Requests answered or consumed, per opcode (for tests and the curious). */
  readonly counters = {
    requests: 0,
    interrupts: 0,
    forgets: 0,
    refusedReplies: 0,
    /** Requests the previous server read and never answered, answered EIO after adoption. */
    orphansAnswered: 0,
  };
  /** Adopted and no request read yet: the first one tells which ids may be orphans. */
  private orphansPending: boolean;
  private readonly reader: FuseReader;
  private fdOpen = true;
  private resolveEnded!: () => void;
  private initDone: FuseProtocolInfo | undefined;
  private readonly initialized: Promise<FuseProtocolInfo>;
  private settleInit: { resolve: (p: FuseProtocolInfo) => void; reject: (e: Error) => void };
  /** Resolves once the reader has stopped and the fd is closed. */
  readonly ended = new Promise<void>((resolve) => (this.resolveEnded = resolve));

  constructor(
    private readonly fd: number,
    private readonly filesystem: FuseFilesystem,
    private readonly options: FuseSessionOptions,
  ) {
    super();
    this.orphansPending = options.adopted !== undefined;
    let settle!: typeof this.settleInit;
    this.initialized = new Promise<FuseProtocolInfo>((resolve, reject) => {
      settle = { resolve, reject };
    });
    // A refusal with nobody awaiting yet must not become an unhandled rejection.
    this.initialized.catch(() => undefined);
    this.settleInit = settle;
    if (options.adopted !== undefined) {
      this.initDone = options.adopted;
      settle.resolve(options.adopted);
    }
    this.reader = new FuseReader(fd, READ_BUFFER_BYTES, {
      request: (buf) => this.onRequest(buf),
      ended: () => this.finish(),
      failed: (err) => {
        this.emit('problem', `the FUSE reader stopped: ${String(err)}`, err);
        this.finish();
      },
    });
  }

  /** Resolves once FUSE_INIT is answered; rejects (FuseInitError) if the kernel is refused. */
  init(): Promise<FuseProtocolInfo> {
    return this.initialized;
  }

  get protocol(): FuseProtocolInfo | undefined {
    return this.initDone;
  }

  /**
   * Stop taking requests off the connection and leave it open for another process that holds
   * it (a hand-over): every request the reader took has been answered, since each is answered
   * before the next read. Resolves when the reader has stopped (or the connection has ended).
   * This process's fd is closed; the kernel keeps the connection for as long as another fd to it
   * is open.
   */
  stopReading(): Promise<void> {
    this.finish();
    return this.ended;
  }

  /** Let the process exit while a detached mount is still being served. */
  unref(): void {
    this.reader.unref();
  }

  /**
   * Wait up to `ms` for the reader to see the connection end (it does once the kernel aborts the
   * connection: a full unmount). true if it did; otherwise the connection is abandoned: the
   * reader stops and this fd is closed, and false.
   */
  async waitForEnd(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    });
    const ended = await Promise.race([this.ended.then(() => true as const), late]);
    clearTimeout(timer);
    if (!ended) this.finish();
    return ended;
  }

  /** Stop reading, close the fd, settle what waits on the session. Idempotent. */
  private finish(): void {
    if (!this.fdOpen) return;
    this.reader.stop(); // before close: see DevicePoller.remove
    this.closeFd();
    this.settleInit.reject(new FuseInitError('the FUSE connection ended before FUSE_INIT'));
    this.resolveEnded();
  }

  private closeFd(): void {
    if (!this.fdOpen) return;
    this.fdOpen = false;
    try {
      closeFd(this.fd);
    } catch {
      // Already closed: nothing left to release.
    }
  }

  private onRequest(buf: Buffer): void {
    const header = parseRequestHeader(buf);
    if (header === undefined) {
      this.emit('problem', `a malformed FUSE request of ${buf.length} bytes was dropped`);
      return;
    }
    this.counters.requests++;
    if (this.orphansPending) this.answerOrphans(header.unique);
    const body = buf.subarray(IN_HEADER.SIZE, header.len);
    switch (header.opcode) {
      case Opcode.INIT:
        return this.onInit(header, body);
      case Opcode.FORGET:
      case Opcode.BATCH_FORGET:
        // Node ids are fixed for the life of the mount (the root and one per file): lookup counts
        // need no bookkeeping, and the kernel expects no reply (fs/fuse/dev.c: FORGETs are
        // sent with no reply expected).
        this.counters.forgets++;
        return;
      case Opcode.INTERRUPT:
        this.counters.interrupts++;
        return;
      case Opcode.DESTROY:
        // Sent only for fuseblk-style connections at unmount; the answer lets umount finish.
        return this.reply(header.unique, 0);
    }
    let answer: FuseReply;
    try {
      answer = this.filesystem.handle({ header, body });
    } catch (err) {
      this.emit('problem', `FUSE opcode ${header.opcode} failed: ${String(err)}`, err);
      answer = { errno: Errno.EIO };
    }
    if ('errno' in answer) this.reply(header.unique, -answer.errno);
    else this.reply(header.unique, 0, answer.body);
  }

  private onInit(header: RequestHeader, body: Buffer): void {
    const init = parseInitIn(body);
    if (init === undefined) {
      this.reply(header.unique, -Errno.EPROTO);
      this.settleInit.reject(new FuseInitError('the kernel sent a FUSE_INIT too short to read'));
      return;
    }
    const outcome = negotiateInit(init, this.options);
    if (outcome.kind === 'refuse') {
      this.reply(header.unique, -Errno.EPROTO);
      this.settleInit.reject(new FuseInitError(outcome.message));
      return;
    }
    this.reply(header.unique, 0, outcome.reply);
    if (outcome.kind === 'reply') {
      this.initDone = outcome.done;
      this.settleInit.resolve(outcome.done);
    }
  }

  /**
   * After a hand-over, requests the previous server had read but not answered when it stopped
   * (killed between its read(2) and its reply) wait for a reply that would never come, and with
   * a request timeout the kernel would then abort the whole connection. The kernel queues
   * requests in id order (fs/fuse/dev.c: ids from fuse_get_unique, pending list FIFO), so they
   * all have ids below the first request this session reads: each such id gets EIO; an id
   * already answered or never used is refused with ENOENT, which costs nothing.
   */
  private answerOrphans(firstUnique: bigint): void {
    this.orphansPending = false;
    const first = firstUnique & ~FUSE_INT_REQ_BIT;
    for (let i = 1n; i <= BigInt(ORPHAN_SCAN_REQUESTS); i++) {
      const unique = first - i * FUSE_REQ_ID_STEP;
      if (unique <= 0n) break;
      if (!this.fdOpen) return;
      const n = writeOrErrno(this.fd, encodeReply(unique, -Errno.EIO));
      if (n >= 0) this.counters.orphansAnswered++;
    }
  }

  /** One write(2) per reply. */
  private reply(unique: bigint, error: number, body?: Buffer): void {
    if (!this.fdOpen) return;
    const n = writeOrErrno(this.fd, encodeReply(unique, error, body));
    // ENOENT: the request was aborted or interrupted meanwhile; ENODEV: the connection is gone.
    if (n >= 0 || n === -Errno.ENOENT || n === -Errno.ENODEV) return;
    this.counters.refusedReplies++;
    this.emit('problem', `the kernel refused a FUSE reply (errno ${-n})`);
  }
}
