/**
 * Helpers of the FUSE tests alone. The FUSE server of an AttributeFs answers on this process's JS
 * thread, so everything here that may touch a mount is asynchronous (threadpool or child
 * process): a synchronous fs call on our own mount would deadlock. Temp dirs (unmounted in
 * cleanup), children, waiting and fixtures: test/support.
 */
import { readFile, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import type { Attribute, StoreOutcome } from '../../src/fs/attribute';
import { IN_HEADER, OUT_HEADER } from '../../src/fs/fuseProtocol';
import { POLLIN, poll, read } from '../../src/native/libc';
import { POLLFD } from '../../src/native/structs';
import { AS_NOBODY, REGISTER_TS, ROOT, run, spawnChild, waitFor, type Child } from '../support';

const MOUNT_CHILD = path.join(__dirname, 'fixtures/mountChild.ts');

/** Mount points listed in /proc/mounts (the file the brief and users look at). */
export async function procMountPoints(): Promise<string[]> {
  const text = await readFile('/proc/mounts', 'utf8');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split(' ')[1].replace(/\\040/g, ' '));
}

// A stand-in kernel (fuseSession, fuseSessionAdopted, fuseReader tests): a SOCK_SEQPACKET socket
// pair keeps message boundaries as /dev/fuse does, and the test plays the kernel's side.

/** A request as the kernel frames it: fuse_in_header (node 1, uid 1000, gid 1001, pid 4242), then `body`. */
export function fuseRequest(
  opcode: number,
  unique: bigint,
  body: Buffer = Buffer.alloc(0),
): Buffer {
  const b = Buffer.alloc(IN_HEADER.SIZE + body.length);
  b.writeUInt32LE(b.length, IN_HEADER.LEN);
  b.writeUInt32LE(opcode, IN_HEADER.OPCODE);
  b.writeBigUInt64LE(unique, IN_HEADER.UNIQUE);
  b.writeBigUInt64LE(1n, IN_HEADER.NODEID);
  b.writeUInt32LE(1000, IN_HEADER.UID);
  b.writeUInt32LE(1001, IN_HEADER.GID);
  b.writeUInt32LE(4242, IN_HEADER.PID);
  body.copy(b, IN_HEADER.SIZE);
  return b;
}

/** A fuse_init_in body. */
export function initBody(major: number, minor: number, flags: bigint): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(major, 0);
  b.writeUInt32LE(minor, 4);
  b.writeUInt32LE(Number(flags & 0xffffffffn), 12);
  b.writeUInt32LE(Number(flags >> 32n), 16);
  return b;
}

export interface StandInReply {
  len: number;
  error: number;
  unique: bigint;
  body: Buffer;
}

/** The next reply written to `kernelFd`, polled without blocking the event loop the session needs. */
export async function nextReply(kernelFd: number): Promise<StandInReply> {
  const fds = Buffer.alloc(POLLFD.SIZE);
  fds.writeInt32LE(kernelFd, POLLFD.FD);
  fds.writeInt16LE(POLLIN, POLLFD.EVENTS);
  await waitFor(`a reply on fd ${kernelFd}`, () => poll(fds, 0) > 0);
  const buf = Buffer.alloc(4096);
  const n = read(kernelFd, buf);
  return {
    len: buf.readUInt32LE(OUT_HEADER.LEN),
    error: buf.readInt32LE(OUT_HEADER.ERROR),
    unique: buf.readBigUInt64LE(OUT_HEADER.UNIQUE),
    body: buf.subarray(OUT_HEADER.SIZE, n),
  };
}

/** How many fds of this process are open on /dev/fuse (one per live mount served here). */
export async function devFuseFdCount(): Promise<number> {
  const fds = await readdir('/proc/self/fd');
  let count = 0;
  for (const fd of fds) {
    try {
      if ((await readlink(`/proc/self/fd/${fd}`)) === '/dev/fuse') count++;
    } catch {
      // The fd readdir itself used is gone already.
    }
  }
  return count;
}

/**
 * A test attribute: every show() renders a new text (its counter changes), every store() is
 * recorded, and the outcome can be scripted.
 */
export class RecordingAttribute implements Attribute {
  shows = 0;
  readonly stores: string[] = [];
  /** Decides each store's outcome. */
  judge: (text: string) => StoreOutcome = () => 'accepted';

  constructor(private readonly body = 'abcdefghijklmnopqrstuvwxyz') {}

  /** The text the n-th show() renders. */
  rendering(n: number): string {
    return `show ${n}: ${this.body}\n`;
  }

  show(): string {
    this.shows++;
    return this.rendering(this.shows);
  }

  store(text: string): StoreOutcome {
    this.stores.push(text);
    return this.judge(text);
  }
}

/** A child `node` serving an AttributeFs at `mountpoint` (test/fs/fixtures/mountChild.ts). */
export interface MountChild {
  child: Child;
  /** The first JSON line the child printed. */
  status: {
    mounted?: string;
    error?: string;
    message?: string;
    protocol?: { minor: number; requestTimeoutSeconds: number; kernelHasRequestTimeout: boolean };
  };
  /** The next JSON line the child prints (rejects if it exits first). */
  nextLine(): Promise<Record<string, unknown>>;
}

export interface MountChildOptions {
  /** 'nobody': run the child unprivileged (test/support/unprivileged.ts). */
  user?: 'nobody';
  /** requestTimeoutSeconds of the child's tree. */
  requestTimeoutSeconds?: number;
  /** Run node with --expose-gc, so the SIGUSR2 statistics come after a collection. */
  exposeGc?: boolean;
}

export function startMountChild(
  mountpoint: string,
  userOrOptions?: 'nobody' | MountChildOptions,
): Promise<MountChild> {
  const options: MountChildOptions =
    typeof userOrOptions === 'string' ? { user: userOrOptions } : (userOrOptions ?? {});
  const node = process.execPath;
  const args = [
    ...(options.exposeGc === true ? ['--expose-gc'] : []),
    '-r',
    REGISTER_TS,
    MOUNT_CHILD,
    mountpoint,
    ...(options.requestTimeoutSeconds === undefined ? [] : [String(options.requestTimeoutSeconds)]),
  ];
  const argv = options.user === undefined ? [node, ...args] : [...AS_NOBODY, node, ...args];
  const started = spawnChild(argv[0], argv.slice(1), { cwd: ROOT });
  const child = started.proc;
  const lines: string[] = [];
  const waiting: ((line: string | undefined) => void)[] = [];
  let partial = '';
  let err = '';
  let exited = false;
  child.stderr?.on('data', (chunk: Buffer) => (err += chunk.toString()));
  child.stdout?.on('data', (chunk: Buffer) => {
    partial += chunk.toString();
    for (let nl = partial.indexOf('\n'); nl >= 0; nl = partial.indexOf('\n')) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      const waiter = waiting.shift();
      if (waiter !== undefined) waiter(line);
      else lines.push(line);
    }
  });
  child.once('exit', () => {
    exited = true;
    for (const waiter of waiting.splice(0)) waiter(undefined);
  });
  const nextLine = (): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const take = (line: string | undefined): void => {
        if (line === undefined) reject(new Error(`mount child exited: ${err}`));
        else resolve(JSON.parse(line) as Record<string, unknown>);
      };
      const queued = lines.shift();
      if (queued !== undefined) take(queued);
      else if (exited) take(undefined);
      else waiting.push(take);
    });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    nextLine().then(
      (status) => resolve({ child: started, status: status as MountChild['status'], nextLine }),
      (e: unknown) => reject(new Error(`mount child exited before reporting: ${String(e)}`)),
    );
  });
}

/** A write(2) argument for fsio: the bytes, optionally at an offset (pwrite), or N pattern bytes. */
export type FsioWrite = Buffer | string | { at: number; data: Buffer | string } | { fill: number };

/**
 * Open `file` once in a child (mode w: O_WRONLY, a: +O_APPEND, t: +O_TRUNC) and make exactly one
 * write(2) per element of `writes`; returns each call's result (a count, or -errno).
 */
export async function fsioWrites(
  fsio: string,
  file: string,
  mode: 'w' | 'a' | 't',
  writes: readonly FsioWrite[],
): Promise<number[]> {
  const hex = (data: Buffer | string): string =>
    (typeof data === 'string' ? Buffer.from(data, 'latin1') : data).toString('hex');
  const args = writes.map((w) => {
    if (typeof w === 'string' || Buffer.isBuffer(w)) return hex(w);
    if ('fill' in w) return `fill:${w.fill}`;
    return `@${w.at}:${hex(w.data)}`;
  });
  const result = await run(fsio, [file, mode, ...args]);
  if (result.code !== 0)
    throw new Error(`fsio ${file} failed (${result.code}): ${result.stdout}${result.stderr}`);
  return result.stdout.trim().split('\n').map(Number);
}
