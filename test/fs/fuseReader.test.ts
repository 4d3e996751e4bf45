/**
 * The FUSE reader's design, against stand-in kernels (SOCK_SEQPACKET socket pairs, as in
 * fuseSession.test.ts): no thread of its own, one wait on the libuv pool for every session (so
 * that more sessions than pool threads neither starve `fs` nor each other), O_NONBLOCK fds, and
 * an unreferenced session that lets the process exit while it still serves, a referenced one that
 * does not hold up process.exit(), and the end of an aborted connection.
 */
import fs from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import {
  AF_UNIX,
  SOCK_CLOEXEC,
  SOCK_SEQPACKET,
  close,
  isNonBlocking,
  socketpair,
  write,
} from '../../src/native/libc';
import { InitFlag, Opcode } from '../../src/fs/fuseProtocol';
import { FuseSession } from '../../src/fs/fuseSession';
import { AttributeFs, type AttributeFsNotice } from '../../src/fs/attributeFs';
import { readMountInfo, topMountAt } from '../../src/fs/mountInfo';
import { TempDir, waitFor } from '../support';
import { ROOT, nodeEvalArgs, requireRoot } from '../support/paths';
import { devFuseFdCount, fuseRequest, initBody, nextReply } from './helpers';

const initRequest = (unique: bigint): Buffer =>
  fuseRequest(Opcode.INIT, unique, initBody(7, 45, InitFlag.FUSE_INIT_EXT));
const nextReplyUnique = async (kernelFd: number): Promise<bigint> =>
  (await nextReply(kernelFd)).unique;

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
    write(pairs[5][1], fuseRequest(Opcode.GETATTR, 100n));
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

/**
 * A child that serves one INIT through a session (unreferenced or not), then runs `after` (by
 * default nothing: the session alone decides whether the process lives on).
 */
const serveOneChild = (unref: boolean, after = ''): string => `
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
    ${after}
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

test('process.exit() and an uncaught exception end the process while a referenced session waits', async () => {
  // Node joins the pool's threads at exit: the reader's wait must not hold one of them forever.
  const exited = await runChild(serveOneChild(false, 'process.exit(3);'), 20000);
  expect(exited).toEqual({ code: 3, out: 'served 43\n' });
  const thrown = await runChild(
    serveOneChild(false, "setImmediate(() => { throw new Error('boom'); });"),
    20000,
  );
  expect(thrown).toEqual({ code: 1, out: 'served 43\n' });
});

describe('a connection aborted through fusectl', () => {
  let tmp: TempDir;
  afterAll(() => tmp?.cleanup());

  test('ends the session quietly (the read says ENODEV: an end, not a failure); close() still unmounts', async () => {
    requireRoot();
    tmp = new TempDir('relayfork-reader-');
    const mountpoint = path.join(tmp.path, 'mnt');
    const notices: AttributeFsNotice[] = [];
    const tree = new AttributeFs(mountpoint, {
      value: { show: () => 'v\n', store: () => 'accepted' },
    });
    tree.on('notice', (n) => notices.push(n));
    try {
      const fdBaseline = await devFuseFdCount();
      await tree.mount();
      expect(await readFile(path.join(mountpoint, 'value'), 'utf8')).toBe('v\n');
      const device = topMountAt(await readMountInfo(), mountpoint)?.device;
      expect(device).toMatch(/^0:\d+$/);
      // fusectl (fs/fuse/control.c) in the temp dir: hosts without systemd have none mounted.
      const fusectl = path.join(tmp.path, 'fusectl');
      fs.mkdirSync(fusectl);
      execFileSync('mount', ['-t', 'fusectl', 'fusectl', fusectl]);
      try {
        const [major, minor] = device!.split(':').map(Number);
        fs.writeFileSync(path.join(fusectl, String(major * 2 ** 20 + minor), 'abort'), '1');
      } finally {
        execFileSync('umount', [fusectl]);
      }
      // The reader sees the end and the session closes its fd.
      await waitFor('the /dev/fuse fd closed', async () => (await devFuseFdCount()) === fdBaseline);
      expect(notices.filter((n) => n.kind === 'fuse-problem')).toEqual([]);
    } finally {
      await tree.close();
    }
    expect(topMountAt(await readMountInfo(), mountpoint)).toBeUndefined();
  });
});
