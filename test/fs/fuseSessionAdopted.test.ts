/**
 * A FuseSession that adopts a connection another server initialised (issue 9 §1, the fd
 * store), against a stand-in kernel (a SOCK_SEQPACKET pair, as in fuseSession.test.ts): no
 * FUSE_INIT is awaited, and the requests the previous server read but never answered (ids
 * below the first one read, FUSE_REQ_ID_STEP apart) get EIO before the first is handled.
 */
import {
  AF_UNIX,
  SOCK_CLOEXEC,
  SOCK_SEQPACKET,
  close,
  duplicateFd,
  socketpair,
  write,
} from '../../src/native/libc';
import { Opcode } from '../../src/fs/fuseProtocol';
import { FuseSession, type FuseProtocolInfo } from '../../src/fs/fuseSession';
import { fuseRequest, nextReply } from './helpers';

const PROTOCOL: FuseProtocolInfo = {
  kernelMajor: 7,
  kernelMinor: 41,
  minor: 41,
  requestTimeoutSeconds: 0,
  kernelHasRequestTimeout: false,
};

let kernelFd = -1;
/** What systemd's fd store would hold: another fd for the session's end. */
let keptFd = -1;
let session: FuseSession | undefined;

const request = (opcode: number, unique: bigint): Buffer =>
  fuseRequest(opcode, unique, Buffer.alloc(16));

/** Every reply written until `last` arrives (bounded wait, without blocking the event loop). */
async function repliesUntil(last: bigint): Promise<Array<{ unique: bigint; error: number }>> {
  const out: Array<{ unique: bigint; error: number }> = [];
  for (;;) {
    const { unique, error } = await nextReply(kernelFd);
    out.push({ unique, error });
    if (unique === last) return out;
  }
}

beforeAll(() => {
  const [ours, theirs] = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  kernelFd = theirs;
  keptFd = duplicateFd(ours);
  session = new FuseSession(
    ours,
    { handle: () => ({ body: Buffer.from('attr') }) },
    { maxWrite: 4096, requestTimeoutSeconds: 30, adopted: PROTOCOL },
  );
});

afterAll(async () => {
  if (kernelFd >= 0) close(kernelFd);
  await session?.ended;
  if (keptFd >= 0) close(keptFd);
});

test('init() resolves at once with the protocol handed over', async () => {
  await expect(session!.init()).resolves.toEqual(PROTOCOL);
  expect(session!.protocol).toEqual(PROTOCOL);
});

test('the ids below the first request get EIO, once, before its own reply', async () => {
  write(kernelFd, request(Opcode.GETATTR, 40n));
  const replies = await repliesUntil(40n);
  const orphans = replies.slice(0, -1);
  // 38, 36, ..., 2: every even id below 40, newest first.
  expect(orphans.map((r) => r.unique)).toEqual(
    Array.from({ length: 19 }, (_, i) => BigInt(38 - 2 * i)),
  );
  expect(orphans.every((r) => r.error === -5)).toBe(true);
  expect(replies[replies.length - 1]).toEqual({ unique: 40n, error: 0 });
  expect(session!.counters.orphansAnswered).toBe(19);

  // Only the first request does it.
  write(kernelFd, request(Opcode.GETATTR, 42n));
  expect(await repliesUntil(42n)).toEqual([{ unique: 42n, error: 0 }]);
  expect(session!.counters.orphansAnswered).toBe(19);
});

test('stopReading() ends the reader while the connection stays open', async () => {
  await session!.stopReading();
  await session!.ended;
  // The reader stopped on request, not because the connection ended: the connection lives on
  // in the other fd, which the next server would read.
  expect(write(kernelFd, request(Opcode.GETATTR, 44n))).toBeGreaterThan(0);
});
