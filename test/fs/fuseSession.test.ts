/**
 * FuseSession against a stand-in kernel: a SOCK_SEQPACKET socket pair keeps message boundaries as
 * /dev/fuse does (one read(2), one request; one write(2), one reply), so the test plays the
 * kernel's side byte for byte and can send what a real mount rarely sends (BATCH_FORGET,
 * DESTROY, an INTERRUPT, garbage). The session reads one end; the test the other.
 */
import {
  AF_UNIX,
  POLLIN,
  SOCK_CLOEXEC,
  SOCK_SEQPACKET,
  close,
  poll,
  socketpair,
  write,
} from '../../src/native/libc';
import { IN_HEADER, InitFlag, Opcode, parseInitOut } from '../../src/fs/fuseProtocol';
import { FuseSession, type FuseRequest } from '../../src/fs/fuseSession';
import { fuseRequest, initBody, nextReply as readReply, type StandInReply } from './helpers';

let kernelFd = -1;
let sessionFd = -1;
/** Set by the slow handler: were the requests behind it still in the device while it ran? */
let queuedWhileBusy: boolean | undefined;
let session: FuseSession | undefined;
const handled: FuseRequest[] = [];
const problems: string[] = [];

const request = fuseRequest;
const nextReply = (): Promise<StandInReply> => readReply(kernelFd);

beforeAll(async () => {
  const [ours, theirs] = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  kernelFd = theirs;
  sessionFd = ours;
  session = new FuseSession(
    ours,
    {
      handle: (req) => {
        handled.push(req);
        if (req.header.nodeid === 99n) {
          // A slow handler: the main thread stays here for 200 ms, never returning to its event
          // loop, then looks whether the requests written behind this one are still unread.
          const until = Date.now() + 200;
          while (Date.now() < until);
          const fds = Buffer.alloc(8);
          fds.writeInt32LE(sessionFd, 0);
          fds.writeInt16LE(POLLIN, 4);
          queuedWhileBusy = poll(fds, 0) > 0;
        }
        if (req.header.opcode === Opcode.GETATTR) return { body: Buffer.from('attr') };
        if (req.header.opcode === Opcode.READ) throw new Error('handler exploded');
        return { errno: 38 };
      },
    },
    { maxWrite: 4096, requestTimeoutSeconds: 30 },
  );
  session.on('problem', (message) => problems.push(message));
  const init = session.init();
  write(
    kernelFd,
    request(
      Opcode.INIT,
      2n,
      initBody(7, 45, InitFlag.FUSE_INIT_EXT | InitFlag.FUSE_REQUEST_TIMEOUT),
    ),
  );
  const reply = await nextReply();
  expect([reply.error, reply.unique, reply.len]).toEqual([0, 2n, 16 + 64]);
  const out = parseInitOut(reply.body);
  expect(out).toMatchObject({ major: 7, minor: 43, maxWrite: 4096, requestTimeout: 30 });
  await expect(init).resolves.toMatchObject({ kernelMinor: 45, minor: 43 });
});

afterAll(async () => {
  // Closing the kernel's end ends the reader (read returns 0), which closes the session's end.
  if (kernelFd >= 0) close(kernelFd);
  await session?.ended;
});

test('FORGET, BATCH_FORGET and INTERRUPT get no reply and reach no handler', async () => {
  handled.length = 0;
  const forget = Buffer.alloc(8);
  forget.writeBigUInt64LE(1n);
  write(kernelFd, request(Opcode.FORGET, 4n, forget));
  const batch = Buffer.alloc(8 + 16);
  batch.writeUInt32LE(1, 0);
  write(kernelFd, request(Opcode.BATCH_FORGET, 6n, batch));
  const interrupt = Buffer.alloc(8);
  interrupt.writeBigUInt64LE(8n);
  write(kernelFd, request(Opcode.INTERRUPT, 9n, interrupt)); // FUSE_INT_REQ_BIT set
  write(kernelFd, request(Opcode.GETATTR, 10n, Buffer.alloc(16)));
  // The first reply is GETATTR's: nothing was written for the three before it.
  const reply = await nextReply();
  expect([reply.unique, reply.error, reply.body.toString()]).toEqual([10n, 0, 'attr']);
  expect(handled.map((r) => r.header.opcode)).toEqual([Opcode.GETATTR]);
  expect(session?.counters).toMatchObject({ forgets: 2, interrupts: 1 });
});

test('the handler sees the caller of each request', async () => {
  handled.length = 0;
  write(kernelFd, request(Opcode.GETATTR, 12n, Buffer.alloc(16)));
  await nextReply();
  expect(handled[0].header).toMatchObject({ uid: 1000, gid: 1001, pid: 4242, nodeid: 1n });
  expect(handled[0].body.length).toBe(16);
});

test('an error reply is the bare header; a throwing handler is EIO and a problem, and serving goes on', async () => {
  write(kernelFd, request(Opcode.LISTXATTR, 14n, Buffer.alloc(8)));
  expect(await nextReply()).toMatchObject({ unique: 14n, error: -38, len: 16 });
  write(kernelFd, request(Opcode.READ, 16n, Buffer.alloc(40)));
  expect(await nextReply()).toMatchObject({ unique: 16n, error: -5, len: 16 });
  expect(problems.some((p) => /handler exploded/.test(p))).toBe(true);
  write(kernelFd, request(Opcode.GETATTR, 18n, Buffer.alloc(16)));
  expect(await nextReply()).toMatchObject({ unique: 18n, error: 0 });
});

test('a malformed request is dropped with a problem; DESTROY is acknowledged', async () => {
  const bad = request(Opcode.GETATTR, 20n);
  bad.writeUInt32LE(9999, IN_HEADER.LEN); // longer than what was read
  write(kernelFd, bad);
  write(kernelFd, request(Opcode.DESTROY, 22n));
  expect(await nextReply()).toMatchObject({ unique: 22n, error: 0, len: 16 });
  expect(problems.some((p) => /malformed FUSE request/.test(p))).toBe(true);
});

test('each request is answered before the next is read: those behind a slow one wait in the device, then all are answered in order', async () => {
  const slow = request(Opcode.GETATTR, 30n, Buffer.alloc(16));
  slow.writeBigUInt64LE(99n, IN_HEADER.NODEID);
  write(kernelFd, slow);
  for (const unique of [32n, 34n, 36n]) {
    write(kernelFd, request(Opcode.GETATTR, unique, Buffer.alloc(16)));
  }
  const uniques: bigint[] = [];
  for (let i = 0; i < 4; i++) uniques.push((await nextReply()).unique);
  // Nothing read and left unanswered while the handler ran: what a hand-over relies on.
  expect(queuedWhileBusy).toBe(true);
  expect(uniques).toEqual([30n, 32n, 34n, 36n]);
});
