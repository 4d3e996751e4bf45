/**
 * The sysfs semantics of AttributeFs (issue 3 §3), through a real FUSE mount and real syscalls.
 * Every file operation on the mount is asynchronous (FileHandle calls run one syscall each on the
 * threadpool) or runs in a child process: the FUSE server is this process's JS thread.
 */
import {
  open,
  readdir,
  rename,
  mkdir,
  rmdir,
  unlink,
  chmod,
  stat,
  truncate,
  writeFile,
} from 'node:fs/promises';
import { constants } from 'node:os';
import path from 'node:path';
import { AttributeFs, type AttributeFsNotice } from '../../src/fs/attributeFs';
import type { Attribute } from '../../src/fs/attribute';
import { TempDir, cleanupAll, compileFixture, run } from '../support';
import { fsioWrites, RecordingAttribute } from './helpers';

const E = constants.errno;
const counter = new RecordingAttribute();
const judged = new RecordingAttribute();
judged.judge = (text) => (text.startsWith('bad') ? 'rejected' : 'accepted');
let failing = false;
const fragile: Attribute = {
  show: () => {
    if (failing) throw new Error('show exploded');
    return 'fine\n';
  },
  store: () => {
    if (failing) throw new Error('store exploded');
    return 'accepted';
  },
};

let dir: string;
let fsio: string;
let tree: AttributeFs;
const notices: AttributeFsNotice[] = [];
const file = (name: string): string => path.join(dir, name);

beforeAll(async () => {
  fsio = await compileFixture('test/fs/fixtures/fsio.c', new TempDir('relayfork-fs-tools-').path);
  dir = new TempDir('relayfork-fs-').path;
  tree = new AttributeFs(dir, { counter, judged, fragile });
  tree.on('notice', (n) => notices.push(n));
  await tree.mount();
});

afterAll(async () => {
  try {
    await tree?.close();
  } finally {
    await cleanupAll();
  }
});

beforeEach(() => {
  counter.stores.length = 0;
  judged.stores.length = 0;
});

/** Read a file to its end through one fd, `chunk` bytes per read(2). */
async function readAll(name: string, chunk: number): Promise<string> {
  const fh = await open(file(name), 'r');
  try {
    const parts: Buffer[] = [];
    const buf = Buffer.alloc(chunk);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, chunk, null);
      if (bytesRead === 0) break;
      parts.push(Buffer.from(buf.subarray(0, bytesRead)));
    }
    return Buffer.concat(parts).toString('latin1');
  } finally {
    await fh.close();
  }
}

/** Exactly one write(2) of `data` through a fresh O_WRONLY fd; its result (count or -errno). */
async function writeOnce(name: string, data: Buffer | string): Promise<number> {
  const [result] = await fsioWrites(fsio, file(name), 'w', [data]);
  return result;
}

describe('the tree', () => {
  test('the root is a 0755 directory owned by root holding exactly the named files', async () => {
    const st = await stat(dir);
    expect(st.isDirectory()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o755);
    expect([st.uid, st.gid]).toEqual([0, 0]);
    expect((await readdir(dir)).sort()).toEqual(['counter', 'fragile', 'judged']);
  });

  test('each file is a 0644 regular file owned by root, of size 4096, also after reads', async () => {
    await readAll('counter', 4096);
    for (const name of ['counter', 'judged', 'fragile']) {
      const st = await stat(file(name));
      expect(st.isFile()).toBe(true);
      expect(st.mode & 0o7777).toBe(0o644);
      expect([st.uid, st.gid, st.size]).toEqual([0, 0, 4096]);
    }
  });

  test('unknown paths are ENOENT; creating is EACCES; removing, renaming, mkdir, chmod are EPERM', async () => {
    await expect(stat(file('nope'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(open(file('nope'), 'r')).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(writeFile(file('new'), 'x')).rejects.toMatchObject({ code: 'EACCES' });
    await expect(unlink(file('counter'))).rejects.toMatchObject({ code: 'EPERM' });
    await expect(rename(file('counter'), file('other'))).rejects.toMatchObject({ code: 'EPERM' });
    await expect(mkdir(file('sub'))).rejects.toMatchObject({ code: 'EPERM' });
    await expect(rmdir(file('counter'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(chmod(file('counter'), 0o666)).rejects.toMatchObject({ code: 'EPERM' });
    expect((await readdir(dir)).sort()).toEqual(['counter', 'fragile', 'judged']);
    expect((await stat(file('counter'))).mode & 0o7777).toBe(0o644);
  });
});

describe('reads', () => {
  test('a read at offset 0 renders show() once; 1-byte reads continue from that rendering', async () => {
    const before = counter.shows;
    const text = await readAll('counter', 1);
    expect(counter.shows).toBe(before + 1);
    expect(text).toBe(counter.rendering(before + 1));
  });

  test('dd bs=1 from a shell reads one consistent rendering', async () => {
    const before = counter.shows;
    const { code, stdout } = await run('dd', [`if=${file('counter')}`, 'bs=1', 'status=none']);
    expect(code).toBe(0);
    expect(stdout).toBe(counter.rendering(before + 1));
    expect(counter.shows).toBe(before + 1);
  });

  test('each open file keeps its own rendering; a new read at offset 0 renders again', async () => {
    const a = await open(file('counter'), 'r');
    const b = await open(file('counter'), 'r');
    try {
      const one = Buffer.alloc(1);
      const first = counter.shows + 1;
      await a.read(one, 0, 1, null); // a renders `first`
      const bText = Buffer.alloc(4096);
      const { bytesRead } = await b.read(bText, 0, 4096, null); // b renders `first + 1`
      expect(bText.toString('latin1', 0, bytesRead)).toBe(counter.rendering(first + 1));
      const rest = Buffer.alloc(4096);
      const { bytesRead: restRead } = await a.read(rest, 0, 4096, null); // a continues at offset 1
      expect(one.toString('latin1') + rest.toString('latin1', 0, restRead)).toBe(
        counter.rendering(first),
      );
      expect(counter.shows).toBe(first + 1);
      const again = await a.read(rest, 0, 4096, 0); // pread at offset 0: a fresh rendering
      expect(rest.toString('latin1', 0, again.bytesRead)).toBe(counter.rendering(first + 2));
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('cat from a shell prints the rendering', async () => {
    const before = counter.shows;
    const { code, stdout } = await run('cat', [file('counter')]);
    expect(code).toBe(0);
    expect(stdout).toBe(counter.rendering(before + 1));
  });
});

describe('writes', () => {
  test('one write(2) of exact bytes, no newline, is one store and returns its length', async () => {
    expect(await writeOnce('counter', '40')).toBe(2);
    expect(counter.stores).toEqual(['40']);
  });

  test('the offset is ignored: a pwrite far into the file and O_APPEND writes each store their text', async () => {
    expect(await fsioWrites(fsio, file('counter'), 'w', [{ at: 1000, data: '123' }])).toEqual([3]);
    expect(await fsioWrites(fsio, file('counter'), 'a', ['7\n', '8\n'])).toEqual([2, 2]);
    expect(counter.stores).toEqual(['123', '7\n', '8\n']);
  });

  test('several write(2)s on one fd are one store each, whatever the file offset', async () => {
    expect(await fsioWrites(fsio, file('counter'), 'w', ['1', '22', '333'])).toEqual([1, 2, 3]);
    expect(counter.stores).toEqual(['1', '22', '333']);
  });

  test('a 5000-byte write is ONE store of its first 4095 bytes and returns 4095', async () => {
    expect(await fsioWrites(fsio, file('counter'), 'w', [{ fill: 5000 }])).toEqual([4095]);
    expect(counter.stores).toHaveLength(1);
    const pattern = Array.from({ length: 4095 }, (_, i) => String(i % 10)).join('');
    expect(counter.stores[0]).toBe(pattern);
  });

  test('a write larger than max_write (200000 bytes) is still one store and returns 4095', async () => {
    expect(await fsioWrites(fsio, file('counter'), 'w', [{ fill: 200000 }])).toEqual([4095]);
    expect(counter.stores).toHaveLength(1);
    expect(counter.stores[0]).toHaveLength(4095);
  });

  test('a 4095-byte write is stored whole; a 4096-byte one loses its last byte', async () => {
    expect(await fsioWrites(fsio, file('counter'), 'w', [{ fill: 4095 }, { fill: 4096 }])).toEqual([
      4095, 4095,
    ]);
    expect(counter.stores.map((t) => t.length)).toEqual([4095, 4095]);
  });

  test('the text is cut at the first NUL and the write returns strlen: "12\\0ab" returns 2', async () => {
    expect(await writeOnce('counter', Buffer.from('12\0ab', 'latin1'))).toBe(2);
    expect(counter.stores).toEqual(['12']);
  });

  test('a write whose string is empty consumes every byte it offered (a 0 return would make write-all loops spin)', async () => {
    expect(await writeOnce('counter', Buffer.from('\0abc', 'latin1'))).toBe(4);
    expect(await writeOnce('counter', Buffer.from('\0', 'latin1'))).toBe(1);
    // Past 4095 bytes only the considered bytes are consumed, so the next chunk is a new write.
    expect(await writeOnce('counter', Buffer.alloc(5000))).toBe(4095);
    expect(counter.stores).toEqual(['', '', '']);
    // What a shell's printf and stdio do: loop until every byte is written. They finish.
    const shell = await run('bash', ['-c', `printf '%s\\0' '' > ${file('counter')}; echo done`]);
    expect(shell.stdout).toBe('done\n');
    expect(shell.code).toBe(0);
    expect(counter.stores).toEqual(['', '', '', '']);
  });

  test('bytes are decoded as latin1, one char per byte', async () => {
    expect(await writeOnce('counter', Buffer.from([0x34, 0xe9, 0xff]))).toBe(3);
    expect(counter.stores).toEqual(['4\u00e9\u00ff']);
  });

  test('truncate and ftruncate succeed and store nothing', async () => {
    await truncate(file('counter'), 0);
    const fh = await open(file('counter'), 'r+');
    try {
      await fh.truncate(0);
      await fh.truncate(10);
    } finally {
      await fh.close();
    }
    expect(counter.stores).toEqual([]);
    expect((await stat(file('counter'))).size).toBe(4096);
  });

  test('echo > and echo >> from a real shell each make one store', async () => {
    expect((await run('sh', ['-c', `echo 40 > ${file('counter')}`])).code).toBe(0);
    expect((await run('sh', ['-c', `echo 41 >> ${file('counter')}`])).code).toBe(0);
    expect((await run('sh', ['-c', `printf 42 > ${file('counter')}`])).code).toBe(0);
    expect(counter.stores).toEqual(['40\n', '41\n', '42']);
  });

  test("a store that says 'rejected' fails the write with EINVAL; a shell shows Invalid argument", async () => {
    expect(await writeOnce('judged', 'bad1')).toBe(-E.EINVAL);
    // bash reports the errno (dash's echo says only "I/O error" for any failed write).
    const shell = await run('bash', ['-c', `echo bad2 > ${file('judged')}`]);
    expect(shell.code).not.toBe(0);
    expect(shell.stderr).toMatch(/Invalid argument/);
    expect(await writeOnce('judged', 'good')).toBe(4);
    expect(judged.stores).toEqual(['bad1', 'bad2\n', 'good']);
  });

  test('show() or store() throwing is EIO for that call and a notice; the tree keeps serving', async () => {
    notices.length = 0;
    failing = true;
    try {
      await expect(readAll('fragile', 4096)).rejects.toMatchObject({ code: 'EIO' });
      expect(await writeOnce('fragile', '1')).toBe(-E.EIO);
    } finally {
      failing = false;
    }
    expect(notices.map((n) => n.kind === 'attribute-failed' && n.operation)).toEqual([
      'show',
      'store',
    ]);
    expect(await readAll('fragile', 4096)).toBe('fine\n');
  });
});

describe('as an unprivileged user (runuser -u nobody)', () => {
  test('reads work', async () => {
    const before = counter.shows;
    const { code, stdout } = await run('runuser', ['-u', 'nobody', '--', 'cat', file('counter')]);
    expect(code).toBe(0);
    expect(stdout).toBe(counter.rendering(before + 1));
  });

  test('writes fail with Permission denied and store nothing', async () => {
    const { code, stderr } = await run('runuser', [
      '-u',
      'nobody',
      '--',
      'sh',
      '-c',
      `echo 1 > ${file('counter')}`,
    ]);
    expect(code).not.toBe(0);
    expect(stderr).toMatch(/Permission denied/);
    const create = await run('runuser', [
      '-u',
      'nobody',
      '--',
      'sh',
      '-c',
      `echo 1 > ${file('new')}`,
    ]);
    expect(create.code).not.toBe(0);
    expect(create.stderr).toMatch(/Permission denied/);
    expect(counter.stores).toEqual([]);
  });
});
