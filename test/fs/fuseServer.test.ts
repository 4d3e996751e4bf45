/**
 * The TypeScript FUSE server through real mounts: what FUSE_INIT settled, file modes enforced by
 * the kernel (default_permissions), the caller of a write, per-open memory, and the request
 * timeout. The file rules themselves are in attributeFs.test.ts.
 */
import { execFile } from 'node:child_process';
import { stat, statfs } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Attribute, Caller, StoreErrno, StoreOutcome } from '../../src/fs/attribute';
import {
  AttributeFs,
  DEFAULT_REQUEST_TIMEOUT_SECONDS,
  MAX_HELD_RENDERING_BYTES,
} from '../../src/fs/attributeFs';
import { FUSE_KERNEL_MINOR_VERSION, FUSE_MIN_KERNEL_MINOR } from '../../src/fs/fuseProtocol';
import { TempDir, cleanupAll, run, spawnChild, stopAllChildren, waitFor } from '../support';
import { procMountPoints, startMountChild, type MountChild } from './helpers';

/** An attribute that records each store with its caller. */
class CallerAttribute implements Attribute {
  readonly stores: { text: string; caller: Caller | undefined }[] = [];
  constructor(readonly mode?: number) {}
  show(): string {
    return 'x\n';
  }
  store(text: string, caller?: Caller): StoreOutcome {
    this.stores.push({ text, caller });
    return 'accepted';
  }
}

const open666 = new CallerAttribute(0o666);
const locked = new CallerAttribute();
/** A store that fails through no fault of the text, with the errno of the text written. */
const failing: Attribute = {
  show: () => 'x\n',
  store: (text) => ({ errno: text.trim() as StoreErrno }),
};
let base: string;
let dir: string;
let tree: AttributeFs;

/** Linux version as [major, minor] from os.release(). */
function kernelVersion(): [number, number] {
  const [major, minor] = os
    .release()
    .split('.')
    .map((n) => parseInt(n, 10));
  return [major, minor];
}

async function idOf(flag: '-u' | '-g', user: string): Promise<number> {
  const { stdout } = await run('id', [flag, user]);
  return Number(stdout.trim());
}

beforeAll(async () => {
  base = new TempDir('relayfork-fuse-').path;
  // The mountpoint itself, not a directory below the 0700 temp dir: nobody must reach the files.
  dir = new TempDir('relayfork-fs-').path;
  tree = new AttributeFs(dir, { open: open666, locked, failing });
  await tree.mount();
});

afterAll(async () => {
  try {
    await stopAllChildren();
    await tree?.close();
  } finally {
    await cleanupAll();
  }
});

describe('FUSE_INIT', () => {
  test('negotiates min(kernel minor, ours) of protocol 7 and, where the kernel has it, a 30 s request timeout', () => {
    const protocol = tree.protocol;
    expect(protocol).toBeDefined();
    if (protocol === undefined) return;
    expect(protocol.kernelMajor).toBe(7);
    expect(protocol.kernelMinor).toBeGreaterThanOrEqual(FUSE_MIN_KERNEL_MINOR);
    expect(protocol.minor).toBe(Math.min(protocol.kernelMinor, FUSE_KERNEL_MINOR_VERSION));
    // FUSE_REQUEST_TIMEOUT arrived in Linux 6.14 (protocol 7.43).
    const [major, minor] = kernelVersion();
    const hasTimeout = major > 6 || (major === 6 && minor >= 14);
    expect(protocol.kernelHasRequestTimeout).toBe(hasTimeout);
    expect(protocol.requestTimeoutSeconds).toBe(hasTimeout ? DEFAULT_REQUEST_TIMEOUT_SECONDS : 0);
  });

  test('the mount is fuse.relayfork from relayfork, nosuid,nodev, allow_other, default_permissions', async () => {
    const { stdout } = await run('findmnt', ['-n', '-o', 'FSTYPE,SOURCE,OPTIONS', dir]);
    const [fstype, source, options] = stdout.trim().split(/\s+/);
    expect([fstype, source]).toEqual(['fuse.relayfork', 'relayfork']);
    expect(options.split(',')).toEqual(
      expect.arrayContaining(['nosuid', 'nodev', 'allow_other', 'default_permissions']),
    );
    // STATFS answers like sysfs: 4096-byte blocks, none used.
    const st = await statfs(dir);
    expect([st.bsize, st.blocks]).toEqual([4096, 0]);
  });
});

describe('file modes, enforced by the kernel (default_permissions)', () => {
  test('an attribute without a mode is 0644; one with mode 0o666 is 0666', async () => {
    expect((await stat(path.join(dir, 'locked'))).mode & 0o7777).toBe(0o644);
    expect((await stat(path.join(dir, 'open'))).mode & 0o7777).toBe(0o666);
  });

  test('a non-root writer gets EACCES at 0644 and reaches store() at 0666, which learns its uid, gid and pid', async () => {
    const [uid, gid] = [await idOf('-u', 'nobody'), await idOf('-g', 'nobody')];
    const denied = await run('runuser', [
      '-u',
      'nobody',
      '--',
      'sh',
      '-c',
      `echo 1 > ${path.join(dir, 'locked')}`,
    ]);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/Permission denied/);
    expect(locked.stores).toEqual([]);

    // `echo` is a shell builtin: the shell itself (pid $$) makes the write(2).
    const allowed = await run('runuser', [
      '-u',
      'nobody',
      '--',
      'sh',
      '-c',
      `echo $$ > ${path.join(dir, 'open')}`,
    ]);
    expect(allowed.code).toBe(0);
    expect(open666.stores).toHaveLength(1);
    const [{ text, caller }] = open666.stores;
    expect(caller).toEqual({ uid, gid, pid: Number(text.trim()) });
  });

  test('a root writer is uid 0, gid 0', async () => {
    open666.stores.length = 0;
    expect((await run('sh', ['-c', `echo $$ > ${path.join(dir, 'open')}`])).code).toBe(0);
    const [{ text, caller }] = open666.stores;
    expect(caller).toEqual({ uid: 0, gid: 0, pid: Number(text.trim()) });
  });

  test('a mode outside 0..0o777 is refused at construction', () => {
    expect(() => new AttributeFs(dir, { bad: new CallerAttribute(0o4755) })).toThrow(TypeError);
  });
});

describe('a store that fails with an errno of its own', () => {
  test.each(['EACCES', 'EPERM', 'EMFILE', 'ENOSPC', 'ENOMEM', 'ESHUTDOWN', 'EIO'])(
    '%s reaches the writer as that errno',
    async (code) => {
      const shell = await run('bash', ['-c', `printf ${code} > ${path.join(dir, 'failing')}`]);
      expect(shell.code).not.toBe(0);
      // bash prints strerror of the failed write(2).
      const messages: Record<string, RegExp> = {
        EACCES: /Permission denied/,
        EPERM: /Operation not permitted/,
        EMFILE: /Too many open files/,
        ENOSPC: /No space left on device/,
        ENOMEM: /Cannot allocate memory/,
        ESHUTDOWN: /Cannot send after transport endpoint shutdown/,
        EIO: /Input\/output error/,
      };
      expect(shell.stderr).toMatch(messages[code]);
    },
  );
});

describe('per-open state', () => {
  const OPENS = 50000;
  /** A child that opens the file OPENS times (read 1 byte, close), then holds 1000 open at once. */
  const DRIVER = `
const fs = require('node:fs');
const [file, opens] = [process.argv[1], Number(process.argv[2])];
const one = Buffer.alloc(1);
for (let i = 0; i < opens; i++) {
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, one, 0, 1, 0); // a rendering kept for the rest of the text
  fs.closeSync(fd);
}
const held = [];
for (let i = 0; i < 1000; i++) {
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, one, 0, 1, 0);
  held.push(fd);
}
for (const fd of held) fs.closeSync(fd);
`;

  test('50,000 opens and closes leave no handle behind, and the heap and RSS come back near their baseline', async () => {
    const mountpoint = path.join(base, 'handles');
    const server: MountChild = await startMountChild(mountpoint, { exposeGc: true });
    expect(server.status.mounted).toBe(mountpoint);
    const stats = async (): Promise<{ rss: number; heapUsed: number; openFiles: number }> => {
      const line = server.nextLine();
      server.child.kill('SIGUSR2');
      return (await line) as { rss: number; heapUsed: number; openFiles: number };
    };
    const drive = (opens: number): Promise<void> =>
      new Promise((resolve, reject) => {
        execFile(
          process.execPath,
          ['-e', DRIVER, path.join(mountpoint, 'value'), String(opens)],
          { timeout: 300000 },
          (err) => (err ? reject(err) : resolve()),
        );
      });

    await drive(2000); // warm-up: code paths compiled, pools sized
    await waitFor('no open files', async () => (await stats()).openFiles === 0, 10000);
    const baseline = await stats();

    await drive(OPENS);
    // RELEASE is sent asynchronously after the last close (fs/fuse/file.c fuse_file_put).
    await waitFor('no open files', async () => (await stats()).openFiles === 0, 10000);
    const after = await stats();
    const MiB = 1024 * 1024;
    expect(after.heapUsed - baseline.heapUsed).toBeLessThan(4 * MiB);
    expect(after.rss - baseline.rss).toBeLessThan(32 * MiB);
    await server.child.stop('SIGTERM');
    expect((await procMountPoints()).includes(mountpoint)).toBe(false);
  }, 300000);
});

describe('renderings held for reads partway through', () => {
  /**
   * A child that stores a 4000-byte text, opens the file `count` times reading 1 byte of each (so
   * each open file would keep a 4000-byte rendering), prints "held" and keeps them open until its
   * stdin closes.
   */
  const HOLDER = `
const fs = require('node:fs');
const [file, count] = [process.argv[1], Number(process.argv[2])];
fs.writeFileSync(file, 'x'.repeat(4000));
const one = Buffer.alloc(1);
const fds = [];
for (let i = 0; i < count; i++) {
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, one, 0, 1, 0);
  fds.push(fd);
}
process.stdout.write('held\\n');
process.stdin.resume();
process.stdin.on('end', () => { for (const fd of fds) fs.closeSync(fd); process.exit(0); });
`;

  test('are capped over all open files, and freed when the files close', async () => {
    const mountpoint = path.join(base, 'held');
    const server: MountChild = await startMountChild(mountpoint);
    const stats = async (): Promise<{ openFiles: number; renderingBytes: number }> => {
      const line = server.nextLine();
      server.child.kill('SIGUSR2');
      return (await line) as { openFiles: number; renderingBytes: number };
    };
    const count = Math.ceil(MAX_HELD_RENDERING_BYTES / 4000) + 500;
    const holder = spawnChild(
      process.execPath,
      ['-e', HOLDER, path.join(mountpoint, 'value'), String(count)],
      { stdin: 'pipe' },
    );
    await holder.waitForLine(/^held$/, 'stdout', 120000);
    const holding = await stats();
    expect(holding.openFiles).toBe(count);
    expect(holding.renderingBytes).toBeLessThanOrEqual(MAX_HELD_RENDERING_BYTES);
    expect(holding.renderingBytes).toBeGreaterThan(MAX_HELD_RENDERING_BYTES - 4000);

    holder.proc.stdin?.end();
    await holder.exited;
    await waitFor(
      'no open files and no held renderings',
      async () => {
        const after = await stats();
        return after.openFiles === 0 && after.renderingBytes === 0;
      },
      10000,
    );
    await server.child.stop('SIGTERM');
  }, 300000);
});

describe('request timeout (FUSE_REQUEST_TIMEOUT, Linux 6.14+)', () => {
  test('a stopped server makes callers fail with ECONNABORTED after its timeout instead of hanging', async () => {
    const mountpoint = path.join(base, 'stopped');
    const server = await startMountChild(mountpoint, { requestTimeoutSeconds: 1 });
    expect((await run('cat', [path.join(mountpoint, 'value')])).stdout).toBe('child\n');
    // The FUSE_INIT test above ties kernelHasRequestTimeout to the kernel version (6.14+).
    if (server.status.protocol?.kernelHasRequestTimeout !== true) {
      // Older kernels: nothing was asked for, as README says; a stopped server hangs callers.
      expect(server.status.protocol?.requestTimeoutSeconds).toBe(0);
      return;
    }
    expect(server.status.protocol.requestTimeoutSeconds).toBe(1);

    server.child.kill('SIGSTOP');
    try {
      // The kernel checks timeouts every 15 s (FUSE_TIMEOUT_TIMER_FREQ, fs/fuse/fuse_i.h): a
      // liveness bound well above that, not a timing claim.
      const read = await run('cat', [path.join(mountpoint, 'value')], { timeoutMs: 90000 });
      expect(read.code).not.toBe(0);
      expect(read.stderr).toMatch(/Software caused connection abort/);
    } finally {
      server.child.kill('SIGCONT');
      await server.child.stop('SIGKILL');
    }
    // The aborted connection leaves a stale mount, which cleanup (afterAll) detaches.
  }, 120000);
});
