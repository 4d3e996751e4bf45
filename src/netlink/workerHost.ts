/**
 * The main thread's side of the receive worker (receiveWorker.ts): start it on a socket, route
 * its messages, stop it, and read the frames of the batches it posts. ProcConnector owns one.
 *
 * Stopping: the stop eventfd is written (a worker sleeping in epoll_wait wakes), the stop flag
 * is raised in the shared control words and the socket is sent a datagram of its own (a worker
 * blocked in recv on the relay's fast path wakes, see socket.ts wakeReader); the worker drains
 * the socket once more, posts its final counters and exits on its own. The eventfd is created and
 * closed here. With a fork relay attached (src/relay/forkTable.ts), the relay is told when the
 * worker starts and once it has exited, from which point no pidfd of the table is in use.
 */
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import { EFD_CLOEXEC, EFD_NONBLOCK, close, eventfd, write } from '../native/libc';
import { startWorker } from '../native/workerThread';
import type { ForkRelayLink } from '../relay/forkTable';
import {
  CONTROL_STOP,
  DEFAULT_BATCH_BYTES,
  FRAME_HEADER_BYTES,
  RECEIVE_WORKER_ROLE,
  type ReceiveWorkerData,
  type ReceiveWorkerMessage,
} from './receiveWorker';
import type { CatchUpProbe } from './catchUpPriority';
import { wakeReader } from './socket';

/** The receive worker module beside this file (started by src/native/workerThread.ts). */
const WORKER_ENTRY = path.join(__dirname, 'receiveWorker');

export interface WorkerHostOptions {
  /** The proc connector socket (the caller closes it, after stop()). */
  fd: number;
  /** Shared control words (receiveWorker.ts CONTROL_*). */
  control: SharedArrayBuffer;
  relay: ForkRelayLink | undefined;
  /** The fast path's nice value while it is behind (catchUpPriority.ts); undefined: none. */
  catchUpNice: number | undefined;
  /** Every message but 'ready', in order. */
  onMessage(message: ReceiveWorkerMessage): void;
  /** The worker failed or exited while it should be running. */
  onFailure(message: string, cause?: unknown): void;
}

export class ReceiveWorkerHost {
  private worker: Worker | undefined;
  private stopFd = -1;
  private stopped: (() => void) | undefined;
  private running = false;
  private readonly control: Int32Array;

  constructor(private readonly options: WorkerHostOptions) {
    this.control = new Int32Array(options.control);
  }

  /**
   * Start the worker; resolves once it reads the socket, with what it found of its catch-up
   * priority. Call stop() even if this rejects.
   */
  start(): Promise<CatchUpProbe> {
    const { options } = this;
    this.stopFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    Atomics.store(this.control, CONTROL_STOP, 0);
    return new Promise<CatchUpProbe>((resolve, reject) => {
      const relay = options.relay;
      const data: ReceiveWorkerData = {
        role: RECEIVE_WORKER_ROLE,
        fd: options.fd,
        wakeFd: this.stopFd,
        batchBytes: DEFAULT_BATCH_BYTES,
        control: options.control,
        relay: relay?.workerData(),
        catchUpNice: options.catchUpNice,
      };
      const worker = startWorker(WORKER_ENTRY, data);
      relay?.attached();
      this.worker = worker;
      let ready = false;
      worker.on('message', (msg: ReceiveWorkerMessage) => {
        if (msg.type === 'ready') {
          ready = true;
          this.running = true;
          resolve(msg.catchUp);
        } else options.onMessage(msg);
      });
      worker.on('error', (err) => {
        if (!ready) reject(err);
        else options.onFailure(`the receive worker failed: ${err.message}`, err);
      });
      worker.on('exit', (code) => {
        this.worker = undefined;
        // Nothing sends through the relay's pidfds any more: it may close them.
        relay?.detached();
        const stopped = this.stopped;
        this.stopped = undefined;
        const wasRunning = this.running;
        this.running = false;
        if (!ready)
          reject(new Error(`the receive worker exited with code ${code} before starting`));
        else if (stopped) stopped();
        else if (wasRunning)
          options.onFailure(`the receive worker exited unexpectedly (code ${code})`);
      });
    });
  }

  /** Raise the stop flag, wake the worker, wait for it to exit, close the eventfd. */
  async stop(): Promise<void> {
    const worker = this.worker;
    if (worker) {
      const exited = new Promise<void>((resolve) => {
        this.stopped = resolve;
      });
      const one = Buffer.alloc(8);
      one.writeBigUInt64LE(1n);
      // The eventfd first: a worker that sees the flag reads the eventfd, which must be set.
      write(this.stopFd, one);
      Atomics.store(this.control, CONTROL_STOP, 1);
      // If this fails (a full queue), the worker is not blocked in recv, or its receive timeout
      // (HEARTBEAT_MS) ends the wait. An idle worker asleep in epoll_wait wakes on the eventfd.
      wakeReader(this.options.fd);
      await exited;
    }
    if (this.stopFd >= 0) close(this.stopFd);
    this.stopFd = -1;
  }
}

/**
 * Walk the datagrams of a batch (each framed as [u32 LE length][bytes], padded to 4; see
 * receiveWorker.ts). Returns false if a frame overran the batch (the rest is skipped).
 */
export function forEachFrame(
  buffer: ArrayBuffer,
  datagram: (view: DataView, offset: number, length: number) => void,
): boolean {
  const view = new DataView(buffer);
  const end = view.byteLength;
  let off = 0;
  while (off + FRAME_HEADER_BYTES <= end) {
    const len = view.getUint32(off, true);
    off += FRAME_HEADER_BYTES;
    if (off + len > end) return false;
    datagram(view, off, len);
    off += (len + 3) & ~3;
  }
  return true;
}
