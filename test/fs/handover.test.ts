/**
 * Handing a live mount from one AttributeFs to the next (issue 9 §1: systemd's fd store), for
 * real: the first tree leaves its mount, a caller that arrives in between waits instead of
 * failing, and the second tree adopts the connection (a duplicate of the fd, as systemd keeps
 * it) and answers that caller. Refusals leave the mountpoint free for a fresh mount. Everything
 * that touches a mount served by this process is asynchronous or in a child process.
 */
import { readFile } from 'node:fs/promises';
import fs from 'node:fs';
import path from 'node:path';
import type { Attribute } from '../../src/fs/attribute';
import { AdoptRefused, AttributeFs, type AttributeFsNotice } from '../../src/fs/attributeFs';
import { FsMountError } from '../../src/fs/errors';
import { parseHandoverName } from '../../src/fs/handover';
import { readMountInfo, topMountAt } from '../../src/fs/mountInfo';
import { O_CLOEXEC, O_RDWR, close, duplicateFd, open } from '../../src/native/libc';
import { TempDir, cleanupAll, spawnChild, waitFor } from '../support';
import { devFuseFdCount } from './helpers';

let base: string;
let fdBaseline: number;
const trees: AttributeFs[] = [];
const spareFds: number[] = [];

const value = (text: string): Attribute => ({ show: () => text, store: () => 'accepted' });

function makeTree(
  mountpoint: string,
  files: Record<string, Attribute>,
  notices?: AttributeFsNotice[],
): AttributeFs {
  const tree = new AttributeFs(mountpoint, files);
  if (notices !== undefined) tree.on('notice', (n) => notices.push(n));
  trees.push(tree);
  return tree;
}

async function deviceAt(mountpoint: string): Promise<string | undefined> {
  return topMountAt(await readMountInfo(), mountpoint)?.device;
}

/** `cat file` in a child: resolves with its exit code and output once it ends. */
function catInChild(file: string): { done: Promise<{ code: number | null; out: string }> } {
  const child = spawnChild('cat', [file]);
  return { done: child.exited.then(({ code }) => ({ code, out: child.stdout.join('\n') })) };
}

beforeAll(async () => {
  base = new TempDir('relayfork-handover-').path;
  fdBaseline = await devFuseFdCount();
});

afterAll(async () => {
  try {
    for (const tree of trees) await tree.close().catch(() => undefined);
    for (const fd of spareFds) {
      try {
        close(fd);
      } catch {
        // Taken over and closed by a tree already.
      }
    }
  } finally {
    await cleanupAll();
  }
});

test('a caller arriving between two servers waits and is answered by the second', async () => {
  const mountpoint = path.join(base, 'live');
  const first = makeTree(mountpoint, { value: value('one\n') });
  await first.mount();
  const handover = first.handover();
  expect(handover).toBeDefined();
  const described = parseHandoverName(handover!.name);
  const device = await deviceAt(mountpoint);
  expect(described?.device).toBe(device);
  // What systemd keeps: a duplicate of the fd, the same connection.
  const kept = duplicateFd(handover!.fd);
  spareFds.push(kept);

  const leftNotices: AttributeFsNotice[] = [];
  first.on('notice', (n) => leftNotices.push(n));
  await first.leaveMounted();
  expect(leftNotices.map((n) => n.kind)).toContain('left-mounted');
  expect(await deviceAt(mountpoint)).toBe(device); // still mounted, nobody serving

  // A caller now: its request waits in the kernel.
  const waiting = catInChild(path.join(mountpoint, 'value'));
  const settled = await Promise.race([
    waiting.done.then(() => true),
    new Promise<false>((r) => setTimeout(r, 500, false)),
  ]);
  expect(settled).toBe(false);

  const notices: AttributeFsNotice[] = [];
  const second = makeTree(mountpoint, { value: value('two\n') }, notices);
  await second.adopt({ fd: kept, name: handover!.name });
  const result = await waiting.done;
  expect(result).toEqual({ code: 0, out: 'two' });
  const adopted = notices.find((n) => n.kind === 'adopted');
  expect(adopted).toMatchObject({ orphansAnswered: 0 }); // the first tree answered all it read
  expect(await deviceAt(mountpoint)).toBe(device); // the same mount, never remounted
  expect(await readFile(path.join(mountpoint, 'value'), 'utf8')).toBe('two\n');

  // The successor owns it now: close() unmounts it as usual.
  await second.close();
  expect(await deviceAt(mountpoint)).toBeUndefined();
  await waitFor('the /dev/fuse fds to close', async () => (await devFuseFdCount()) === fdBaseline);
});

describe('refusals: the connection is abandoned and the mountpoint is free for mount()', () => {
  async function leftBehind(
    mountpoint: string,
    files: Record<string, Attribute>,
  ): Promise<{
    fd: number;
    name: string;
    device: string;
  }> {
    const first = makeTree(mountpoint, files);
    await first.mount();
    const h = first.handover()!;
    const fd = duplicateFd(h.fd);
    spareFds.push(fd);
    await first.leaveMounted();
    return { fd, name: h.name, device: (await deviceAt(mountpoint))! };
  }

  async function refusal(tree: AttributeFs, fd: number, name: string): Promise<string> {
    const err: unknown = await tree.adopt({ fd, name }).then(
      () => new Error('expected the adoption to be refused'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AdoptRefused);
    return (err as Error).message;
  }

  test('with a pool of one thread: an error before the connection is touched, kept for a later start', async () => {
    const mountpoint = path.join(base, 'pool-of-one');
    const old = await leftBehind(mountpoint, { value: value('kept\n') });
    const tree = makeTree(mountpoint, { value: value('kept\n') });
    const saved = process.env.UV_THREADPOOL_SIZE;
    process.env.UV_THREADPOOL_SIZE = '1';
    let err: unknown;
    try {
      err = await tree.adopt({ fd: old.fd, name: old.name }).then(
        () => new Error('expected the adoption to fail'),
        (e: unknown) => e,
      );
    } finally {
      if (saved === undefined) delete process.env.UV_THREADPOOL_SIZE;
      else process.env.UV_THREADPOOL_SIZE = saved;
    }
    expect(err).toBeInstanceOf(FsMountError);
    expect(err).toMatchObject({ code: 'THREAD_POOL' });
    // Neither closed nor abandoned: the same tree adopts it once the pool is fit.
    expect(fs.fstatSync(old.fd).isCharacterDevice()).toBe(true);
    expect(await deviceAt(mountpoint)).toBe(old.device);
    spareFds.splice(spareFds.indexOf(old.fd), 1); // the tree owns it from here
    await tree.adopt({ fd: old.fd, name: old.name });
    expect(await readFile(path.join(mountpoint, 'value'), 'utf8')).toBe('kept\n');
    await tree.close();
  });

  test('another set of files: refused, then a fresh mount works', async () => {
    const mountpoint = path.join(base, 'other-files');
    const old = await leftBehind(mountpoint, { value: value('one\n') });
    const tree = makeTree(mountpoint, { value: value('x\n'), extra: value('y\n') });
    expect(await refusal(tree, old.fd, old.name)).toMatch(/another set of files/);
    // A fresh mount (the kernel may give it the freed device number again): the new files.
    await tree.mount();
    expect(await readFile(path.join(mountpoint, 'extra'), 'utf8')).toBe('y\n');
    await tree.close();
  });

  test('a name for another mount, a name that is none, an fd that is not /dev/fuse', async () => {
    const mountpoint = path.join(base, 'wrong');
    const files = { value: value('one\n') };
    const old = await leftBehind(mountpoint, files);
    const d = parseHandoverName(old.name)!;
    const elsewhere = old.name.replace(`.${d.device.replace(':', '.')}.`, '.0.999999.');
    const tree = makeTree(mountpoint, { value: value('fresh\n') });
    // The right fd, but the name says another mount: refused against mountinfo.
    expect(await refusal(tree, duplicateFd(old.fd), elsewhere)).toMatch(/not the one it served/);
    expect(await refusal(tree, duplicateFd(old.fd), 'socket')).toMatch(/names no FUSE connection/);
    const devNull = open('/dev/null', O_RDWR | O_CLOEXEC);
    expect(await refusal(tree, devNull, old.name)).toMatch(/is not \/dev\/fuse/);
    expect(() => fs.fstatSync(devNull)).toThrow(); // closed by the refusal
    // The last refusal named the right mount: it was abandoned, and mount() clears it.
    await tree.mount();
    expect(await readFile(path.join(mountpoint, 'value'), 'utf8')).toBe('fresh\n');
    // A mounted tree adopts nothing: the promise rejects (a caller's catch sees it), no throw.
    const again = tree.adopt({ fd: -1, name: old.name });
    await expect(again).rejects.toThrow(/already mounted or closed/);
    await tree.close();
  });
});
