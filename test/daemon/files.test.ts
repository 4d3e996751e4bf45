/**
 * The patch's file rules (rfd_strtoi, rfd_proclist_store/show, rfd_signal_store/show), row by row,
 * through the daemon's real mount with real syscalls: each write is one write(2) of exact bytes
 * (fs.writeSync makes exactly one call and returns its result), each read a real read(2).
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { TempDir, cleanupAll, compileFixture, execFileAsync, spawnChild } from '../support';
import { Daemon, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;
let daemon: Daemon;
let strict: Daemon;
let fsio: string;
/** test/fixtures/ignore_rt: a threaded process that ignores every RT signal. */
let ignoreRt: string;

/**
 * A live process of our own to register. It ignores the relay signal (an ignored signal stays
 * ignored across exec), as a registrant must: signal 40's default action would end it at the next
 * fork on the machine.
 */
function sleeper(): number {
  return spawnIgnoring40(['sleep', '1000']);
}

function spawnIgnoring40(argv: string[]): number {
  const child = spawnChild('sh', ['-c', 'trap "" 40; exec "$@"', 'sh', ...argv], {
    output: 'ignore',
  });
  // Wait (briefly, synchronously: the daemon is another process) until the exec happened, so
  // the trap is in place.
  const deadline = Date.now() + 5000;
  while (fs.readFileSync(`/proc/${child.pid}/comm`, 'utf8').trim() === 'sh') {
    if (Date.now() > deadline) throw new Error(`${argv[0]} did not exec`);
  }
  return child.pid;
}

beforeAll(async () => {
  tmp = new TempDir();
  // mkdtemp makes 0700 folders: let the non-root test reach the mounts.
  fs.chmodSync(tmp.path, 0o755);
  [fsio, ignoreRt] = await Promise.all([
    compileFixture('test/fs/fixtures/fsio.c', tmp.path),
    compileFixture('ignore_rt', tmp.path),
  ]);
  [daemon, strict] = await Promise.all([
    Daemon.start(tmp.join('plain')),
    Daemon.start(tmp.join('strict'), ['--signal', '40', '--strict']),
  ]);
});

afterAll(cleanupAll);

/**
 * One write(2) of exactly these bytes, made by test/fs/fixtures/fsio.c (Node's fs.writeSync
 * retries a short write with the rest, which here would be a second store); returns write's
 * result, or the error's code.
 */
function writeOnce(file: string, bytes: string | Buffer, mode: 'w' | 'a' = 'w'): number | string {
  const hex = (typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes).toString('hex');
  const out = execFileSync(fsio, [file, mode, hex], { encoding: 'utf8' }).trim();
  const n = Number(out);
  if (!Number.isInteger(n)) throw new Error(`fsio: ${out}`);
  if (n >= 0) return n;
  return Object.entries(os.constants.errno).find(([, e]) => e === -n)?.[0] ?? `errno ${-n}`;
}

function read(file: string): string {
  return fs.readFileSync(file, 'latin1');
}

function ids(d: Daemon): number[] {
  return read(d.file('processes'))
    .split(' ')
    .filter((t) => t.trim() !== '')
    .map(Number);
}

function clearRegistrations(d: Daemon): void {
  for (const id of ids(d)) writeOnce(d.file('processes'), `-${id}`);
}

describe('processes', () => {
  beforeEach(() => clearRegistrations(daemon));

  test('starts empty: "\\n"', () => {
    expect(read(daemon.file('processes'))).toBe('\n');
  });

  test('write N registers; read lists newest first, each id followed by one space', () => {
    const a = sleeper();
    const b = sleeper();
    expect(writeOnce(daemon.file('processes'), `${a}\n`)).toBe(`${a}\n`.length);
    expect(writeOnce(daemon.file('processes'), `${b}`)).toBe(`${b}`.length);
    expect(read(daemon.file('processes'))).toBe(`${b} ${a} \n`);
  });

  test.each([
    ['digits then garbage', (p: number) => `${p}abc`, true],
    ['a leading space', (p: number) => ` ${p}`, false],
    ['a leading +', (p: number) => `+${p}`, false],
    ['no digits', () => 'abc', false],
    ['zero', () => '0', false],
    ['minus zero', () => '-0', false],
    ['empty', () => '', false],
  ])('write with %s: registered = %s, and write returns strlen', (_what, text, registers) => {
    const pid = sleeper();
    const bytes = text(pid);
    expect(writeOnce(daemon.file('processes'), bytes)).toBe(bytes.length);
    expect(ids(daemon).includes(pid)).toBe(registers);
  });

  test('a NUL ends the string: the write returns the length before it', () => {
    const pid = sleeper();
    const bytes = Buffer.concat([Buffer.from(`${pid}`), Buffer.from([0]), Buffer.from('999')]);
    expect(writeOnce(daemon.file('processes'), bytes)).toBe(`${pid}`.length);
    expect(ids(daemon)).toEqual([pid]);
  });

  test('a 5000-byte write is one store of its first 4095 bytes', () => {
    const pid = sleeper();
    const bytes = `${pid}`.padEnd(5000, 'x');
    expect(writeOnce(daemon.file('processes'), bytes)).toBe(4095);
    expect(ids(daemon)).toEqual([pid]);
  });

  test('registering twice lists the id once', () => {
    const pid = sleeper();
    writeOnce(daemon.file('processes'), `${pid}`);
    expect(writeOnce(daemon.file('processes'), `${pid}`)).toBe(`${pid}`.length);
    expect(ids(daemon)).toEqual([pid]);
  });

  test('-N unregisters; -N of an id not registered succeeds and does nothing', () => {
    const a = sleeper();
    const b = sleeper();
    writeOnce(daemon.file('processes'), `${a}`);
    writeOnce(daemon.file('processes'), `${b}`);
    expect(writeOnce(daemon.file('processes'), `-${a}\n`)).toBe(`-${a}\n`.length);
    expect(ids(daemon)).toEqual([b]);
    expect(writeOnce(daemon.file('processes'), `-${a}`)).toBe(`-${a}`.length);
    expect(ids(daemon)).toEqual([b]);
  });

  test('no task with that id, or above pid_max: nothing, and the write succeeds', () => {
    const pidMax = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
    let free = pidMax - 1;
    while (fs.existsSync(`/proc/${free}`)) free--;
    for (const id of [free, pidMax + 1, 4294967297]) {
      expect(writeOnce(daemon.file('processes'), `${id}`)).toBe(`${id}`.length);
    }
    expect(ids(daemon)).toEqual([]);
  });

  test('a thread id is a task: it registers', async () => {
    // The second thread of a process that ignores the relay signal: registered, it receives a
    // signal at every fork on the machine, which must not end it before the listing is read.
    const child = spawnChild(ignoreRt, ['--thread']);
    const line = await child.waitForLine(/^ready \d+$/, 'stdout');
    const tid = Number(/^ready (\d+)$/.exec(line)?.[1]);
    expect(tid).not.toBe(child.pid);
    expect(fs.existsSync(`/proc/${child.pid}/task/${tid}`)).toBe(true);
    expect(writeOnce(daemon.file('processes'), `${tid}`)).toBe(`${tid}`.length);
    expect(ids(daemon)).toEqual([tid]);
  });

  test('O_APPEND (>>) works: the offset is ignored', () => {
    const pid = sleeper();
    expect(writeOnce(daemon.file('processes'), `${pid}`, 'a')).toBe(`${pid}`.length);
    expect(ids(daemon)).toEqual([pid]);
  });

  test('a shell\u2019s echo > and echo >> work (truncate succeeds and does nothing)', async () => {
    const a = sleeper();
    const b = sleeper();
    await execFileAsync('sh', ['-c', `echo ${a} > ${daemon.file('processes')}`]);
    await execFileAsync('sh', ['-c', `echo ${b} >> ${daemon.file('processes')}`]);
    expect(ids(daemon)).toEqual([b, a]);
    fs.truncateSync(daemon.file('processes'), 0);
    expect(ids(daemon)).toEqual([b, a]);
  });

  test('reads one byte at a time continue the same rendering (dd bs=1)', async () => {
    const a = sleeper();
    writeOnce(daemon.file('processes'), `${a}`);
    const fd = fs.openSync(daemon.file('processes'), 'r');
    try {
      const one = Buffer.alloc(1);
      let text = '';
      for (let i = 0; i < 3; i++) {
        fs.readSync(fd, one, 0, 1, null);
        text += one.toString('latin1');
      }
      // The list changes in the middle of the read: the reader still sees the first rendering.
      const b = sleeper();
      writeOnce(daemon.file('processes'), `${b}`);
      for (;;) {
        const n = fs.readSync(fd, one, 0, 1, null);
        if (n === 0) break;
        text += one.toString('latin1');
      }
      expect(text).toBe(`${a} \n`);
    } finally {
      fs.closeSync(fd);
    }
    const { stdout } = await execFileAsync('dd', [
      `if=${daemon.file('processes')}`,
      'bs=1',
      'status=none',
    ]);
    expect(stdout).toBe(read(daemon.file('processes')));
  });

  test('stat: mode 0644, owned by root, size 4096; the directory 0755 with exactly two files', () => {
    const st = fs.statSync(daemon.file('processes'));
    expect({ mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: st.size }).toEqual({
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: 4096,
    });
    expect(fs.statSync(daemon.mountpoint).mode & 0o7777).toBe(0o755);
    expect(fs.readdirSync(daemon.mountpoint).sort()).toEqual(['processes', 'signal', 'stats']);
  });
});

describe('signal', () => {
  afterEach(() => writeOnce(daemon.file('signal'), '40'));

  test.each([
    ['41', 41],
    ['-42\n', 42],
    ['43abc', 43],
    ['33', 33],
    ['63', 63],
    ['32', 40],
    ['64', 40],
    ['0', 40],
    [' 44', 40],
    ['+44', 40],
    ['abc', 40],
    ['', 40],
  ])('write %j: signal reads %i', (text, expected) => {
    expect(writeOnce(daemon.file('signal'), text)).toBe(text.length);
    expect(read(daemon.file('signal'))).toBe(`${expected}\n`);
  });
});

describe('--strict: a write the patch would ignore fails with EINVAL', () => {
  beforeEach(() => clearRegistrations(strict));

  test.each<[file: 'processes' | 'signal', text: () => string]>([
    ['processes', () => 'abc'],
    ['processes', () => '0'],
    ['processes', () => '4294967297'],
    ['processes', () => `-${sleeper()}`],
    ['signal', () => '64'],
    ['signal', () => 'x'],
  ])('%s: rejects what the patch ignores', (file, text) => {
    expect(writeOnce(strict.file(file), text())).toBe('EINVAL');
  });

  test('valid writes still work, and re-registering is not an error', () => {
    const pid = sleeper();
    expect(writeOnce(strict.file('processes'), `${pid}`)).toBe(`${pid}`.length);
    expect(writeOnce(strict.file('processes'), `${pid}`)).toBe(`${pid}`.length);
    expect(ids(strict)).toEqual([pid]);
    expect(writeOnce(strict.file('signal'), '45')).toBe(2);
    expect(read(strict.file('signal'))).toBe('45\n');
  });

  test('a shell shows "Invalid argument"', async () => {
    await expect(
      execFileAsync('bash', ['-c', `echo nope > ${strict.file('processes')}`]),
    ).rejects.toMatchObject({
      stderr: expect.stringMatching(/Invalid argument/),
    });
  });
});

describe('permissions: every user reads, only root writes', () => {
  test('as nobody', async () => {
    const { stdout } = await execFileAsync('runuser', [
      '-u',
      'nobody',
      '--',
      'cat',
      daemon.file('signal'),
    ]);
    expect(stdout).toBe('40\n');
    for (const file of ['processes', 'signal'] as const) {
      const err = await new Promise<{ stderr: string; code: number | null }>((resolve) =>
        execFile(
          'runuser',
          ['-u', 'nobody', '--', 'sh', '-c', `echo 41 > ${daemon.file(file)}`],
          (e, _o, stderr) =>
            resolve({ stderr, code: e ? ((e as { code?: number }).code ?? 1) : 0 }),
        ),
      );
      expect(err.code).not.toBe(0);
      expect(err.stderr).toMatch(/Permission denied/);
    }
    expect(read(daemon.file('signal'))).toBe('40\n');
  });
});
