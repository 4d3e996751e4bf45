/**
 * Mounting and unmounting AttributeFs for real: the start-up errors a user can hit, the mountpoint
 * cases (missing, symlink, stale), and close(). Everything that touches a mount served by this
 * process is asynchronous or in a child process.
 */
import { mkdir, open, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Attribute } from '../../src/fs/attribute';
import { AttributeFs, type AttributeFsNotice } from '../../src/fs/attributeFs';
import { FsMountError } from '../../src/fs/errors';
import { checkFuseDevice, checkRoot } from '../../src/fs/preflight';
import { TempDir, cleanupAll, run, stopAllChildren, waitFor } from '../support';
import { devFuseFdCount, procMountPoints, startMountChild } from './helpers';

let base: string;
let fdBaseline: number;
const trees: AttributeFs[] = [];

const value: Attribute = { show: () => 'value\n', store: () => 'accepted' };

/** A tree on `mountpoint` that afterAll closes whatever happens. */
function makeTree(mountpoint: string, notices?: AttributeFsNotice[]): AttributeFs {
  const tree = new AttributeFs(mountpoint, { value });
  if (notices !== undefined) tree.on('notice', (n) => notices.push(n));
  trees.push(tree);
  return tree;
}

/** The FsMountError `promise` rejects with (fails the test if it resolves or throws another). */
async function mountError(promise: Promise<void>): Promise<FsMountError> {
  const err: unknown = await promise.then(
    () => new Error('expected the mount to fail, but it succeeded'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FsMountError);
  const mountErr = err as FsMountError;
  expect(mountErr.message).not.toMatch(/\n/); // one line
  return mountErr;
}

beforeAll(async () => {
  base = new TempDir('relayfork-fs-').path;
  fdBaseline = await devFuseFdCount();
});

afterAll(async () => {
  try {
    await stopAllChildren();
    for (const tree of trees) await tree.close().catch(() => undefined);
  } finally {
    await cleanupAll();
  }
});

describe('start-up errors: one line saying what is wrong and what to do', () => {
  test('not root', async () => {
    expect(() => checkRoot(1000)).toThrow(expect.objectContaining({ code: 'NOT_ROOT' }));
    expect(() => checkRoot(0)).not.toThrow();
    // For real: a child running as nobody.
    const mountpoint = path.join(base, 'as-nobody');
    const started = await startMountChild(mountpoint, 'nobody');
    expect(started.status.error).toBe('NOT_ROOT');
    expect(started.status.message).toMatch(/needs root .*run it as root/);
    expect((await procMountPoints()).includes(mountpoint)).toBe(false);
  });

  test('/dev/fuse missing, or not a character device', async () => {
    const missing = path.join(base, 'no-such-fuse');
    const missingErr = await mountError(checkFuseDevice(missing));
    expect(missingErr.code).toBe('ENODEV_FUSE');
    expect(missingErr.message).toMatch(/does not exist: .*modprobe fuse.*--device \/dev\/fuse/);

    const regular = path.join(base, 'fake-fuse');
    await writeFile(regular, '');
    const regularErr = await mountError(checkFuseDevice(regular));
    expect(regularErr.code).toBe('ENODEV_FUSE');
    expect(regularErr.message).toMatch(/not a character device/);

    await expect(checkFuseDevice()).resolves.toBeUndefined();
  });

  test('mountpoint exists and is not a directory', async () => {
    const regular = path.join(base, 'a-file');
    await writeFile(regular, 'x');
    const err = await mountError(makeTree(regular).mount());
    expect(err.code).toBe('NOT_A_DIRECTORY');
    expect(err.message).toMatch(
      /is not a directory \(a regular file\): remove it or choose another/,
    );

    const under = await mountError(makeTree(path.join(regular, 'sub')).mount());
    expect(under.code).toBe('NOT_A_DIRECTORY');
  });

  test('mountpoint not empty', async () => {
    const full = path.join(base, 'full');
    await mkdir(full);
    await writeFile(path.join(full, 'precious'), 'x');
    const err = await mountError(makeTree(full).mount());
    expect(err.code).toBe('MOUNTPOINT_NOT_EMPTY');
    expect(err.message).toMatch(/holds precious/);
  });

  test('mountpoint busy: a live tree already there (another relayfork)', async () => {
    const mountpoint = path.join(base, 'busy');
    await mkdir(mountpoint);
    const first = makeTree(mountpoint);
    await first.mount();
    const err = await mountError(makeTree(mountpoint).mount());
    expect(err.code).toBe('MOUNTPOINT_BUSY');
    expect(err.message).toMatch(/fuse\.relayfork .*already mounted there \(another relayfork/);
    // The first tree was not disturbed.
    expect(await readFile(path.join(mountpoint, 'value'), 'utf8')).toBe('value\n');
    await first.close();
    expect((await procMountPoints()).includes(mountpoint)).toBe(false);
  });

  test('mountpoint busy: something else mounted there (tmpfs)', async () => {
    const mountpoint = path.join(base, 'tmpfs');
    await mkdir(mountpoint);
    const mounted = await run('mount', ['-t', 'tmpfs', 'tmpfs', mountpoint]);
    expect(mounted.code).toBe(0);
    const err = await mountError(makeTree(mountpoint).mount());
    expect(err.code).toBe('MOUNTPOINT_BUSY');
    expect(err.message).toMatch(/tmpfs from tmpfs is already mounted there: .*umount/);
  });
});

describe('the mountpoint', () => {
  test('is created (mkdir -p) when missing, with a notice', async () => {
    const notices: AttributeFsNotice[] = [];
    const mountpoint = path.join(base, 'deep/er/tree');
    const tree = makeTree(mountpoint, notices);
    await tree.mount();
    expect(notices.filter((n) => n.kind === 'mountpoint-created').map((n) => n.mountpoint)).toEqual(
      [mountpoint],
    );
    expect(await readFile(path.join(mountpoint, 'value'), 'utf8')).toBe('value\n');
    await tree.close();
  });

  test('a missing mountpoint on a read-only filesystem says EROFS, not ENOENT', async () => {
    const readOnly = path.join(base, 'read-only');
    await mkdir(readOnly);
    expect((await run('mount', ['-t', 'tmpfs', '-o', 'ro', 'tmpfs', readOnly])).code).toBe(0);
    for (const mountpoint of [path.join(readOnly, 'tree'), path.join(readOnly, 'deep/er/tree')]) {
      const err = await mountError(makeTree(mountpoint).mount());
      expect(err.code).toBe('MOUNTPOINT_UNUSABLE');
      expect(err.message).toMatch(/is on a read-only filesystem \(EROFS\)/);
      expect(err.message).not.toMatch(/ENOENT/);
    }
    // (cleanup in afterAll unmounts the tmpfs.)
  });

  test('a symlink is followed to its directory', async () => {
    const target = path.join(base, 'real');
    await mkdir(target);
    const link = path.join(base, 'link');
    await symlink(target, link);
    const tree = makeTree(link);
    await tree.mount();
    expect(tree.mountpoint).toBe(target);
    expect((await procMountPoints()).includes(target)).toBe(true);
    await tree.close();
    expect((await procMountPoints()).includes(target)).toBe(false);
  });

  test('a stale mount left by a killed server is detected and cleared, with a notice', async () => {
    const mountpoint = path.join(base, 'stale');
    const started = await startMountChild(mountpoint);
    expect(started.status.mounted).toBe(mountpoint);
    await started.child.stop('SIGKILL');
    // What a user sees after `kill -9` of a daemon.
    await expect(stat(mountpoint)).rejects.toMatchObject({ code: 'ENOTCONN' });
    expect((await procMountPoints()).filter((p) => p === mountpoint)).toHaveLength(1);

    const notices: AttributeFsNotice[] = [];
    const tree = makeTree(mountpoint, notices);
    await tree.mount();
    const cleared = notices.filter((n) => n.kind === 'stale-mount-cleared');
    expect(cleared).toHaveLength(1);
    expect(cleared[0].message).toMatch(/stale fuse\.relayfork mount/);
    expect(await readFile(path.join(mountpoint, 'value'), 'utf8')).toBe('value\n');
    expect((await procMountPoints()).filter((p) => p === mountpoint)).toHaveLength(1);
    await tree.close();
    expect((await procMountPoints()).includes(mountpoint)).toBe(false);
    await expect(stat(mountpoint)).resolves.toBeDefined();
  });
});

describe('close()', () => {
  test('unmounts, is idempotent, releases its /dev/fuse fd; mount() afterwards is refused', async () => {
    const mountpoint = path.join(base, 'closing');
    const tree = makeTree(mountpoint);
    await tree.mount();
    expect(await devFuseFdCount()).toBe(fdBaseline + 1);
    expect((await procMountPoints()).includes(mountpoint)).toBe(true);

    await Promise.all([tree.close(), tree.close()]);
    await tree.close();
    expect((await procMountPoints()).includes(mountpoint)).toBe(false);
    // The native FUSE thread closes its /dev/fuse fd once its loop has ended.
    await waitFor(
      'the /dev/fuse fds back to the baseline',
      async () => (await devFuseFdCount()) === fdBaseline,
    );

    const err = await mountError(tree.mount());
    expect(err.code).toBe('CLOSED');
  });

  test('before mount() it resolves, and mount() is then refused', async () => {
    const tree = makeTree(path.join(base, 'never'));
    await tree.close();
    expect((await mountError(tree.mount())).code).toBe('CLOSED');
  });

  test('during mount() it waits for the mount and undoes it', async () => {
    const mountpoint = path.join(base, 'racing');
    const tree = makeTree(mountpoint);
    const mounting = tree.mount();
    const closing = tree.close();
    await mounting;
    await closing;
    expect((await procMountPoints()).includes(mountpoint)).toBe(false);
  });

  test('with a file still open it detaches the mount (notice); the kernel ends it at the last close', async () => {
    const notices: AttributeFsNotice[] = [];
    const mountpoint = path.join(base, 'open-file');
    const tree = makeTree(mountpoint, notices);
    await tree.mount();
    const fh = await open(path.join(mountpoint, 'value'), 'r');
    try {
      await tree.close();
      expect(notices.map((n) => n.kind)).toContain('unmounted-lazily');
      expect((await procMountPoints()).includes(mountpoint)).toBe(false);
      // The detached mount still serves the file that was open.
      const buf = Buffer.alloc(64);
      const { bytesRead } = await fh.read(buf, 0, 64, 0);
      expect(buf.toString('latin1', 0, bytesRead)).toBe('value\n');
      expect(await devFuseFdCount()).toBe(fdBaseline + 1);
    } finally {
      await fh.close();
    }
    await waitFor(
      'the /dev/fuse fds back to the baseline',
      async () => (await devFuseFdCount()) === fdBaseline,
    );
  });
});
