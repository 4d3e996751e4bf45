/**
 * The receive loop, run in a worker_thread so that reading the socket never waits for the main
 * thread's event loop (a busy main thread must not become lost events: the kernel drops what does
 * not fit in the socket's receive buffer).
 *
 * Loop: recv(MSG_DONTWAIT) until EAGAIN into one large buffer, post what was read to the main
 * thread as one batch (an ArrayBuffer, transferred), then poll([socket, wake eventfd], -1).
 * ProcConnector.close() writes the eventfd to wake the loop, which drains once more, reports its
 * final counters and returns; the worker then exits on its own (it holds no handles).
 *
 * Batch format: datagrams back to back, each framed as [u32 LE length][bytes], padded to 4.
 *
 * ENOBUFS from recv means the kernel could not queue one or more messages (netlink_overrun(),
 * net/netlink/af_netlink.c): the loop counts it, reads the socket's exact drop counter
 * (SO_MEMINFO[SK_MEMINFO_DROPS]), posts a loss notice and keeps reading. It never stops on loss.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { Errno, MSG_DONTWAIT, MSG_TRUNC, POLLIN, poll, read, recvOrErrno } from '../native/libc';
import { SK_MEMINFO_BYTES, readSocketDrops } from './socket';

/** What ProcConnector passes as workerData. */
export interface ReceiveWorkerData {
  role: typeof RECEIVE_WORKER_ROLE;
  /** The proc connector socket (owned by the main thread, which closes it after the worker). */
  fd: number;
  /** An eventfd; readable = stop. */
  wakeFd: number;
  /** Size of the batch buffer. */
  batchBytes: number;
}

export const RECEIVE_WORKER_ROLE = 'relayfork-netlink-receive';

/** Messages from the worker to the main thread. */
export type ReceiveWorkerMessage =
  | { type: 'ready' }
  | { type: 'batch'; buffer: ArrayBuffer }
  | { type: 'loss'; overruns: number; dropped: number }
  | { type: 'stopped'; overruns: number; dropped: number }
  | { type: 'fatal'; message: string; code?: string };

/** [u32 length] before each datagram in a batch. */
export const FRAME_HEADER_BYTES = 4;
/**
 * Room kept free for the next datagram. A proc connector datagram is 76 bytes on Linux 6.x; a
 * larger one (a future kernel) is truncated here, reported by MSG_TRUNC and counted as malformed
 * by the parser rather than overrunning the batch.
 */
export const MAX_DATAGRAM_BYTES = 4096;
/** Default batch buffer: ~3,300 events of 80 framed bytes per post at most. */
export const DEFAULT_BATCH_BYTES = 256 * 1024;

/**
 * Under load, the worker waits this long before posting a small batch (see the loop). It bounds
 * the added latency; the socket queue grows by rate x window meanwhile (110 events at 110k/s).
 */
export const COALESCE_WINDOW_MS = 1;

const POLLNVAL = 0x20;
const POLLFD_SIZE = 8; // struct pollfd { int fd; short events; short revents; }
const POLLFD_REVENTS = 6;

export function runReceiveLoop(data: ReceiveWorkerData, port: MessagePort): void {
  const { fd, wakeFd } = data;
  const batchBytes = Math.max(data.batchBytes, 2 * (FRAME_HEADER_BYTES + MAX_DATAGRAM_BYTES));
  const batch = Buffer.from(new ArrayBuffer(batchBytes));
  const meminfo = Buffer.alloc(SK_MEMINFO_BYTES);
  const wakeValue = Buffer.alloc(8);
  const pollfds = Buffer.alloc(2 * POLLFD_SIZE);
  pollfds.writeInt32LE(fd, 0);
  pollfds.writeInt16LE(POLLIN, 4);
  pollfds.writeInt32LE(wakeFd, POLLFD_SIZE);
  pollfds.writeInt16LE(POLLIN, POLLFD_SIZE + 4);

  const wakeOnly = pollfds.subarray(POLLFD_SIZE);
  let used = 0;
  let overruns = 0;
  let dropped = 0;
  let lossSinceLastDrain = false;

  const flush = (): void => {
    if (used === 0) return;
    // A copy of exactly the bytes used is transferred; the big buffer stays here for reuse, so a
    // quiet machine (one event per wake-up) does not allocate a large buffer per event.
    const out = batch.buffer.slice(0, used);
    port.postMessage({ type: 'batch', buffer: out } satisfies ReceiveWorkerMessage, [out]);
    used = 0;
  };

  const postLoss = (): void => {
    port.postMessage({ type: 'loss', overruns, dropped } satisfies ReceiveWorkerMessage);
  };

  /** Read until EAGAIN. */
  const drain = (): void => {
    for (;;) {
      if (batchBytes - used < FRAME_HEADER_BYTES + MAX_DATAGRAM_BYTES) flush();
      const n = recvOrErrno(
        fd,
        batch,
        used + FRAME_HEADER_BYTES,
        MAX_DATAGRAM_BYTES,
        MSG_DONTWAIT | MSG_TRUNC,
      );
      if (n >= 0) {
        const kept = Math.min(n, MAX_DATAGRAM_BYTES);
        batch.writeUInt32LE(kept, used);
        used += FRAME_HEADER_BYTES + ((kept + 3) & ~3);
        continue;
      }
      if (n === -Errno.EAGAIN) return;
      if (n === -Errno.EINTR) continue;
      // -ENOBUFS: events were lost. Deliver what came before the loss first, in order.
      overruns++;
      dropped = readSocketDrops(fd, meminfo);
      flush();
      postLoss();
      lossSinceLastDrain = true;
    }
  };

  port.postMessage({ type: 'ready' } satisfies ReceiveWorkerMessage);
  try {
    let lastFlushMs = 0;
    for (;;) {
      drain();
      if (
        used > 0 &&
        used < batchBytes / 4 &&
        performance.now() - lastFlushMs < COALESCE_WINDOW_MS
      ) {
        // Busy (the last batch went out under a millisecond ago): sleep one window, waking only
        // for close(), and read what arrived meanwhile, so a storm costs the main thread one
        // message per millisecond instead of one per few events. Measured on the 100,000-thread
        // storm: ~2,500 batches instead of ~70,000, a third of the CPU. A quiet machine never
        // waits: its events go out as soon as they are read.
        poll(wakeOnly, COALESCE_WINDOW_MS);
        drain();
      }
      if (used > 0) lastFlushMs = performance.now();
      flush();
      if (lossSinceLastDrain) {
        // The kernel reports ENOBUFS once per congested episode, but keeps counting drops until
        // the queue empties (netlink_rcv_wake() clears NETLINK_S_CONGESTED): now it has.
        lossSinceLastDrain = false;
        const now = readSocketDrops(fd, meminfo);
        if (now !== dropped) {
          dropped = now;
          postLoss();
        }
      }
      poll(pollfds, -1);
      if (pollfds.readInt16LE(POLLFD_REVENTS) & POLLNVAL) {
        throw new Error(`poll: the proc connector socket (fd ${fd}) was closed under the worker`);
      }
      if (pollfds.readInt16LE(POLLFD_SIZE + POLLFD_REVENTS) & POLLIN) break;
    }
    read(wakeFd, wakeValue);
    // close() unsubscribed before waking us: take what the kernel queued until then.
    drain();
    flush();
    dropped = readSocketDrops(fd, meminfo);
    port.postMessage({ type: 'stopped', overruns, dropped } satisfies ReceiveWorkerMessage);
  } catch (err) {
    const e = err as Error & { code?: unknown };
    port.postMessage({
      type: 'fatal',
      message: e.message,
      code: typeof e.code === 'string' ? e.code : undefined,
    } satisfies ReceiveWorkerMessage);
  }
}

function isReceiveWorkerData(data: unknown): data is ReceiveWorkerData {
  return (
    typeof data === 'object' &&
    data !== null &&
    (data as Partial<ReceiveWorkerData>).role === RECEIVE_WORKER_ROLE
  );
}

// Run only as the worker's entry point (compiled .js, or under jest the .ts source through
// test/support/tsWorker.ts), never when the main thread imports this module for its types.
if (parentPort !== null && isReceiveWorkerData(workerData)) {
  runReceiveLoop(workerData, parentPort);
}
