/**
 * Start-up checks, all asynchronous: each failure a user can hit becomes one FsMountError line that
 * says what is wrong and what to do, instead of a bare errno from mount(2).
 */
import type { Stats } from 'node:fs';
import { lstat, mkdir, open, opendir, realpath, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { MNT_DETACH, umount2 } from '../native/libc';
import { errnoCode, FsMountError } from './errors';
import { readMountInfo, topMountAt, type MountInfoEntry } from './mountInfo';

export const FUSE_DEVICE = '/dev/fuse';

/** How long a mounted filesystem may take to answer statfs before we call its server hung. */
const PROBE_TIMEOUT_MS = 2000;
/** Rounds of "clear a stale mount / create / follow a symlink" before giving up. */
const MAX_ROUNDS = 8;

/** What preparing the mountpoint did that a daemon should log. */
export type MountpointNotice =
  | { kind: 'mountpoint-created'; mountpoint: string; message: string }
  | { kind: 'stale-mount-cleared'; mountpoint: string; fsType: string; message: string };

export interface PreparedMountpoint {
  /** Absolute, symlink-free path to mount on. */
  path: string;
  notices: MountpointNotice[];
}

/** Mounting needs root: mount(2) needs CAP_SYS_ADMIN and we never fall back to fusermount. */
export function checkRoot(euid: number | undefined = process.geteuid?.()): void {
  if (euid !== 0) {
    throw new FsMountError(
      'NOT_ROOT',
      `mounting the FUSE tree needs root (running with euid ${String(euid)}): run it as root, e.g. with sudo`,
    );
  }
}

/**
 * The threads libuv's pool will have, read from `UV_THREADPOOL_SIZE` as libuv 1.x reads it
 * (src/threadpool.c, init_threads): unset means 4; otherwise atoi() of the value, where 0 (and so
 * "", "abc", "0") means 1, a negative value wraps (unsigned) to the 1024 maximum, and trailing
 * junk is ignored ("3x" is 3). Measured on Node 20 by counting the process's threads.
 */
export function threadPoolSize(value: string | undefined): number {
  if (value === undefined) return 4;
  const n = Number(/^[\t\n\v\f\r ]*([+-]?\d+)/.exec(value)?.[1] ?? 0);
  if (n === 0) return 1;
  if (n < 0 || n > 1024) return 1024;
  return n;
}

/**
 * The FUSE server waits for requests on libuv's pool (fuseReader.ts: one epoll_wait that lasts
 * while the mount is served); with a pool of one thread that wait would hold it, and every fs call
 * of the process would queue behind it until a FUSE request came (measured with a pool of one: the
 * daemon's start-up took 7.6 s and its SIGTERM never finished).
 */
export function checkThreadPool(value: string | undefined = process.env.UV_THREADPOOL_SIZE): void {
  const size = threadPoolSize(value);
  if (size < 2) {
    throw new FsMountError(
      'THREAD_POOL',
      `UV_THREADPOOL_SIZE=${JSON.stringify(value)} gives libuv's thread pool ${size} thread, and the FUSE server needs at least 2 (one waits on /dev/fuse): unset UV_THREADPOOL_SIZE or set it to 2 or more`,
    );
  }
}

/** /dev/fuse must exist, be the FUSE character device, and be openable by us. */
export async function checkFuseDevice(device: string = FUSE_DEVICE): Promise<void> {
  const advice = 'load the FUSE module (modprobe fuse); in Docker, run with --device /dev/fuse';
  let st: Stats;
  try {
    st = await stat(device);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new FsMountError('ENODEV_FUSE', `${device} does not exist: ${advice}`, { cause: err });
    }
    throw new FsMountError(
      'ENODEV_FUSE',
      `cannot stat ${device} (${errnoCode(err) ?? String(err)}): ${advice}`,
      { cause: err },
    );
  }
  if (!st.isCharacterDevice()) {
    throw new FsMountError('ENODEV_FUSE', `${device} is not a character device: ${advice}`);
  }
  try {
    // Opening /dev/fuse allocates nothing until a mount uses the fd; it proves the device works
    // (ENODEV: no fuse module) and that a container's device cgroup lets us use it (EPERM).
    const handle = await open(device, 'r+');
    await handle.close();
  } catch (err) {
    throw new FsMountError(
      'ENODEV_FUSE',
      `cannot open ${device} (${errnoCode(err) ?? String(err)}): ${advice}`,
      { cause: err },
    );
  }
}

/**
 * Make `mountpoint` ready to mount on: create it if missing, clear a stale FUSE mount left there by
 * a killed server, and refuse (FsMountError) a non-directory, a live mount or a non-empty directory.
 */
export async function prepareMountpoint(mountpoint: string): Promise<PreparedMountpoint> {
  const notices: MountpointNotice[] = [];
  let wanted = path.resolve(mountpoint);
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const target = await canonicalize(wanted);

    const top = topMountAt(await readMountInfo(), target);
    if (top !== undefined) {
      const state = await probeMount(target);
      if (state === 'stale') {
        detachStale(target, top);
        notices.push({
          kind: 'stale-mount-cleared',
          mountpoint: target,
          fsType: top.fsType,
          message: `cleared a stale ${top.fsType} mount at ${target} (its server had died: "Transport endpoint is not connected")`,
        });
        continue;
      }
      throw busy(target, top, state === 'hung');
    }

    let st: Stats;
    try {
      st = await lstat(target);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT') {
        await createDirectory(target);
        notices.push({
          kind: 'mountpoint-created',
          mountpoint: target,
          message: `created mountpoint ${target}`,
        });
        continue;
      }
      if (code === 'ENOTDIR') throw parentNotDirectory(target, err);
      throw unusable(target, 'lstat', err);
    }
    if (st.isSymbolicLink()) {
      try {
        wanted = await realpath(target);
      } catch (err) {
        throw unusable(target, 'realpath', err);
      }
      continue;
    }
    if (!st.isDirectory()) {
      throw new FsMountError(
        'NOT_A_DIRECTORY',
        `mountpoint ${target} exists and is not a directory (${describe(st)}): remove it or choose another mountpoint`,
      );
    }
    await checkEmpty(target);
    return { path: target, notices };
  }
  throw new FsMountError(
    'MOUNTPOINT_UNUSABLE',
    `mountpoint ${mountpoint} kept changing while it was being prepared: check what else mounts there`,
  );
}

/**
 * realpath(3) of the parent joined with the last component: never of the mountpoint itself, since a
 * path lookup through a stale FUSE mount fails ENOTCONN. Missing parents are left as they are
 * (createDirectory makes them).
 */
export async function canonicalize(wanted: string): Promise<string> {
  try {
    return path.join(await realpath(path.dirname(wanted)), path.basename(wanted));
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT') return wanted;
    if (code === 'ENOTDIR') throw parentNotDirectory(wanted, err);
    throw unusable(path.dirname(wanted), 'realpath', err);
  }
}

/**
 * Is whatever is mounted at `target` served? statfs(2) always reaches a FUSE server (it is not
 * cached), so an aborted connection shows as ENOTCONN (server gone) or ECONNABORTED (aborted via
 * /sys/fs/fuse/connections). A server that does not answer at all is reported as hung.
 */
async function probeMount(target: string): Promise<'live' | 'stale' | 'hung'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'hung'>((resolve) => {
    timer = setTimeout(() => resolve('hung'), PROBE_TIMEOUT_MS);
  });
  const probe = statfs(target).then(
    () => 'live' as const,
    (err: unknown) => {
      const code = errnoCode(err);
      return code === 'ENOTCONN' || code === 'ECONNABORTED'
        ? ('stale' as const)
        : ('live' as const);
    },
  );
  try {
    return await Promise.race([probe, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function detachStale(target: string, top: MountInfoEntry): void {
  try {
    // MNT_DETACH: a stale mount may still be referenced (a shell's cwd); detaching never blocks.
    umount2(target, MNT_DETACH);
  } catch (err) {
    throw new FsMountError(
      'STALE_MOUNT',
      `a stale ${top.fsType} mount at ${target} could not be cleared (${(err as Error).message}): run umount -l ${target}`,
      { cause: err },
    );
  }
}

function busy(target: string, top: MountInfoEntry, hung: boolean): FsMountError {
  const who = top.fsType.startsWith('fuse') ? ' (another relayfork or FUSE server?)' : '';
  const state = hung ? ' and its server does not answer' : '';
  return new FsMountError(
    'MOUNTPOINT_BUSY',
    `mountpoint ${target} is busy: ${top.fsType} from ${top.source} is already mounted there${who}${state}: ` +
      `stop what serves it or unmount it (umount ${target}), or choose another mountpoint`,
  );
}

/**
 * mkdir -p, one component at a time. Not mkdir({ recursive: true }): Node's recursive mkdir
 * reports a read-only filesystem as ENOENT (it takes any failure of a missing path's parent
 * chain for "no such directory"), so a user would be told the path does not exist instead of
 * EROFS. A plain mkdir(2) of each missing component gets the kernel's own errno.
 */
async function createDirectory(target: string): Promise<void> {
  const missing: string[] = [];
  let existing = target;
  for (;;) {
    try {
      await lstat(existing);
      break;
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOTDIR') throw parentNotDirectory(target, err);
      if (code !== 'ENOENT' || path.dirname(existing) === existing) {
        throw unusable(existing, 'lstat', err);
      }
      missing.unshift(existing);
      existing = path.dirname(existing);
    }
  }
  for (const dir of missing) {
    try {
      await mkdir(dir, { mode: 0o755 });
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'EEXIST') continue; // made meanwhile; lstat in the next round judges it
      if (code === 'ENOTDIR') throw parentNotDirectory(target, err);
      if (code === 'EROFS') {
        throw new FsMountError(
          'MOUNTPOINT_UNUSABLE',
          `cannot create mountpoint ${target}: ${path.dirname(dir)} is on a read-only filesystem (EROFS): create the directory while it is writable, or choose a mountpoint on a writable filesystem`,
          { cause: err },
        );
      }
      throw unusable(target, 'mkdir', err);
    }
  }
}

async function checkEmpty(target: string): Promise<void> {
  let first: string | undefined;
  try {
    const dir = await opendir(target);
    try {
      first = (await dir.read())?.name;
    } finally {
      await dir.close();
    }
  } catch (err) {
    throw unusable(target, 'opendir', err);
  }
  if (first !== undefined) {
    throw new FsMountError(
      'MOUNTPOINT_NOT_EMPTY',
      `mountpoint ${target} is not empty (it holds ${first}) and mounting would hide its contents: empty it or choose another mountpoint`,
    );
  }
}

function parentNotDirectory(target: string, cause: unknown): FsMountError {
  return new FsMountError(
    'NOT_A_DIRECTORY',
    `a parent of mountpoint ${target} exists and is not a directory: fix the path or choose another mountpoint`,
    { cause },
  );
}

function unusable(target: string, call: string, err: unknown): FsMountError {
  return new FsMountError(
    'MOUNTPOINT_UNUSABLE',
    `cannot use mountpoint ${target}: ${call} failed (${errnoCode(err) ?? String(err)}): check the path and its permissions`,
    { cause: err },
  );
}

function describe(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'not a directory';
}
