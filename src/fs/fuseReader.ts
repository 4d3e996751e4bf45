/**
 * The FUSE request reader, run in a worker thread: a blocking read(2) loop on /dev/fuse that
 * hands each request to the main thread (transferred, not copied again), so that a busy or slow
 * main thread never stops the kernel's requests from being taken off the device, and the main
 * thread never blocks in read(2).
 *
 * One read(2) returns exactly one request (fs/fuse/dev.c fuse_dev_do_read). The loop ends when
 * the connection does: read(2) fails ENODEV once the mount is gone and every open file on it is
 * closed (fuse_abort_conn / fuse_conn_destroy), and then the worker exits; the main thread owns
 * the fd and closes it after the worker's 'ended'.
 *
 * It can also be asked to stop while the connection lives on (a hand-over to the next process):
 * it waits in poll(2) on the device and a stop eventfd, so a stop never interrupts a request
 * between its read and its hand-off; it then posts 'stopped', after every request it read.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { Errno, POLLIN, poll, readOrErrno } from '../native/libc';
import { POLLFD } from '../native/structs';

export const FUSE_READER_ROLE = 'relayfork-fuse-reader';

/** What FuseSession passes as workerData. */
export interface FuseReaderData {
  role: typeof FUSE_READER_ROLE;
  /** The /dev/fuse fd of the mount (owned by the main thread). */
  fd: number;
  /** read(2) buffer size: at least FUSE_MIN_READ_BUFFER and a WRITE of max_write bytes. */
  bufferBytes: number;
  /** An eventfd (owned by the main thread); readable = stop reading, leave the connection. */
  stopFd: number;
}

/** Messages from the reader to the main thread. */
export type FuseReaderMessage =
  | { type: 'request'; buffer: ArrayBuffer }
  | { type: 'ended' }
  | { type: 'stopped' }
  | { type: 'fatal'; message: string; code?: string };

export function runReader(data: FuseReaderData, port: MessagePort): void {
  const buf = Buffer.alloc(data.bufferBytes);
  const fds = Buffer.alloc(2 * POLLFD.SIZE);
  fds.writeInt32LE(data.fd, POLLFD.FD);
  fds.writeInt16LE(POLLIN, POLLFD.EVENTS);
  fds.writeInt32LE(data.stopFd, POLLFD.SIZE + POLLFD.FD);
  fds.writeInt16LE(POLLIN, POLLFD.SIZE + POLLFD.EVENTS);
  for (;;) {
    let n: number;
    try {
      fds.writeInt16LE(0, POLLFD.REVENTS);
      fds.writeInt16LE(0, POLLFD.SIZE + POLLFD.REVENTS);
      // -1: no timeout. EINTR returns 0 with no revents: the loop polls again.
      poll(fds, -1);
      if (fds.readInt16LE(POLLFD.SIZE + POLLFD.REVENTS) !== 0) {
        port.postMessage({ type: 'stopped' } satisfies FuseReaderMessage);
        return;
      }
      // Readable, or POLLERR once the connection is aborted: read(2) then says ENODEV.
      if (fds.readInt16LE(POLLFD.REVENTS) === 0) continue;
      n = readOrErrno(data.fd, buf);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      port.postMessage({
        type: 'fatal',
        message: String(err),
        code: typeof code === 'string' ? code : undefined,
      } satisfies FuseReaderMessage);
      return;
    }
    // ENODEV: the connection ended. 0 never comes from /dev/fuse; it is the end of a socket
    // standing in for it (the session's tests), and must not become an endless loop.
    if (n === -Errno.ENODEV || n === 0) {
      port.postMessage({ type: 'ended' } satisfies FuseReaderMessage);
      return;
    }
    // EINTR: a signal; ENOENT: the request was interrupted before we could read it.
    if (n < 0) continue;
    const request = buf.buffer.slice(buf.byteOffset, buf.byteOffset + n);
    port.postMessage({ type: 'request', buffer: request } satisfies FuseReaderMessage, [request]);
  }
}

const data = workerData as Partial<FuseReaderData> | null;
if (parentPort !== null && data?.role === FUSE_READER_ROLE) {
  runReader(data as FuseReaderData, parentPort);
}
