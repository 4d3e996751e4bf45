/**
 * The FUSE reader's design, against stand-in kernels (SOCK_SEQPACKET socket pairs, as in
 * fuseSession.test.ts): no thread of its own, one wait on the libuv pool for every session (so
 * that more sessions than pool threads neither starve `fs` nor each other), O_NONBLOCK fds, and
 * an unreferenced session that lets the process exit while it still serves.
 */
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import {
  AF_UNIX,
  POLLIN,
  SOCK_CLOEXEC,
  SOCK_SEQPACKET,
  close,
  isNonBlocking,
  poll,
  read,
  socketpair,
  write,
} from '../../src/native/libc';
import { IN_HEADER, InitFlag, Opcode } from '../../src/fs/fuseProtocol';
import { FuseSession } from '../../src/fs/fuseSession';
import { ROOT, nodeEvalArgs } from '../support/paths';

function request(opcode: number, unique: bigint, body: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(IN_HEADER.SIZE + body.length);
  b.writeUInt32LE(b.length, IN_HEADER.LEN);
  b.writeUInt32LE(opcode, IN_HEADER.OPCODE);
  b.writeBigUInt64LE(unique, IN_HEADER.UNIQUE);
  b.writeBigUInt64LE(1n, IN_HEADER.NODEID);
  body.copy(b, IN_HEADER.SIZE);
  return b;
}

function initRequest(unique: bigint): Buffer {
  const body = Buffer.alloc(64);
  body.writeUInt32LE(7, 0);
  body.writeUInt32LE(45, 4);
  body.writeUInt32LE(Number(InitFlag.FUSE_INIT_EXT), 12);
  return request(Opcode.INIT, unique, body);
}

/** The unique of the next reply on `kernelFd`, polled without blocking the event loop. */
async function nextReplyUnique(kernelFd: number): Promise<bigint> {
  const fds = Buffer.alloc(8);
  fds.writeInt32LE(kernelFd, 0);
  fds.writeInt16LE(POLLIN, 4);
  const deadline = Date.now() + 10000;
  while (poll(fds, 0) === 0) {
    if (Date.now() > deadline) throw new Error(`no reply on fd ${kernelFd}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const buf = Buffer.alloc(4096);
  read(kernelFd, buf);
  return buf.readBigUInt64LE(8);
}

const threadCount = (): number => fs.readdirSync('/proc/self/task').length;

test('six sessions, more than the pool has threads, share one wait: no thread of their own, fs still served, each answers', async () => {
  // Start the pool (libuv creates its threads at the first use) so the count below is ours.
  await fs.promises.readFile('/proc/self/stat');
  const threadsBefore = threadCount();
  const pairs: [number, number][] = [];
  const sessions: FuseSession[] = [];
  try {
    for (let i = 0; i < 6; i++) {
      const pair = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
      pairs.push(pair);
      const [ours] = pair;
      sessions.push(
        new FuseSession(
          ours,
          { handle: () => ({ body: Buffer.from(`session ${i}`) }) },
          { maxWrite: 4096, requestTimeoutSeconds: 0 },
        ),
      );
      expect(isNonBlocking(ours)).toBe(true);
    }
    // All six idle and waiting: the pool's four threads still serve fs.
    await expect(fs.promises.readFile('/proc/self/stat', 'utf8')).resolves.toMatch(/^\d+ /);
    expect(threadCount()).toBe(threadsBefore);

    // Requests to every session at once, then to the last one alone.
    pairs.forEach(([, theirs], i) => write(theirs, initRequest(BigInt(2 + 2 * i))));
    const uniques = await Promise.all(pairs.map(([, theirs]) => nextReplyUnique(theirs)));
    expect(uniques).toEqual(pairs.map((_, i) => BigInt(2 + 2 * i)));
    await Promise.all(sessions.map((s) => s.init()));
    write(pairs[5][1], request(Opcode.GETATTR, 100n));
    expect(await nextReplyUnique(pairs[5][1])).toBe(100n);
    expect(threadCount()).toBe(threadsBefore);
  } finally {
    // The kernel's end closes: each reader reads EOF, ends, and closes the session's end.
    for (const [, theirs] of pairs) close(theirs);
    await Promise.all(sessions.map((s) => s.ended));
  }
});

/** A child node running `body` after the sources' register hook; its exit code and output. */
function runChild(body: string, timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, nodeEvalArgs(body), {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve({ code: null, out });
    }, timeoutMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** A child that serves one INIT through a session (unreferenced or not), then has nothing to do. */
const serveOneChild = (unref: boolean): string => `
  const libc = require('./src/native/libc.ts');
  const { FuseSession } = require('./src/fs/fuseSession.ts');
  const { IN_HEADER, Opcode } = require('./src/fs/fuseProtocol.ts');
  const [ours, theirs] = libc.socketpair(libc.AF_UNIX, libc.SOCK_SEQPACKET | libc.SOCK_CLOEXEC, 0);
  const session = new FuseSession(ours, { handle: () => ({ errno: 38 }) },
    { maxWrite: 4096, requestTimeoutSeconds: 0 });
  if (${unref}) session.unref();
  const init = Buffer.alloc(IN_HEADER.SIZE + 64);
  init.writeUInt32LE(init.length, IN_HEADER.LEN);
  init.writeUInt32LE(Opcode.INIT, IN_HEADER.OPCODE);
  init.writeBigUInt64LE(2n, IN_HEADER.UNIQUE);
  init.writeUInt32LE(7, IN_HEADER.SIZE);
  init.writeUInt32LE(45, IN_HEADER.SIZE + 4);
  libc.write(theirs, init);
  // Alive until served, whatever the session does; after that only the session may keep it so.
  const keepAlive = setTimeout(() => undefined, 20000);
  session.init().then((p) => {
    process.stdout.write('served ' + p.minor + '\\n');
    clearTimeout(keepAlive);
  });
`;

test('an unreferenced session is still served and lets the process exit; a referenced one keeps it alive', async () => {
  // Liveness bounds, not speed: the unreferenced reader polls every 100 ms.
  const unreferenced = await runChild(serveOneChild(true), 30000);
  expect(unreferenced.out).toContain('served 43');
  expect(unreferenced.code).toBe(0);

  const referenced = await runChild(serveOneChild(false), 3000);
  expect(referenced.out).toContain('served 43');
  expect(referenced.code).toBeNull(); // still running when the bound ran out, then killed
});
