/**
 * --allow-self-register (issue 8): every user may register its own process or threads, nothing
 * else; `signal` stays root's; without the option the patch's rule (root only) holds.
 */
import fs from 'node:fs';
import {
  TempDir,
  compileFixture,
  execFileAsync,
  parseSignals,
  spawnChild,
  waitFor,
  cleanupAll,
  runForker,
} from '../support';
import { Daemon, consumerArgs, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;
let consumerBin: string;
let forkerBin: string;
/** test/fs/fixtures/fsio: one write(2) per argument, printing its return or -errno. */
let fsio: string;

beforeAll(async () => {
  tmp = new TempDir();
  // mkdtemp makes 0700 folders: nobody must reach the binaries and the mounts.
  fs.chmodSync(tmp.path, 0o755);
  [consumerBin, forkerBin, fsio] = await Promise.all([
    compileFixture('rt_consumer', tmp.path),
    compileFixture('forker', tmp.path),
    compileFixture('test/fs/fixtures/fsio.c', tmp.path),
  ]);
});

afterAll(cleanupAll);

/** One write(2) of `text` to `file` as nobody: its return value, or -errno (-13: EACCES). */
async function writeAsNobody(file: string, text: string): Promise<number> {
  const hex = Buffer.from(text).toString('hex');
  const { stdout } = await execFileAsync('runuser', ['-u', 'nobody', '--', fsio, file, 'w', hex]);
  return Number(stdout.trim());
}

/** `sh -c script` as nobody; resolves to its exit code and stderr. */
async function asNobody(script: string): Promise<{ code: number; stderr: string }> {
  try {
    await execFileAsync('runuser', ['-u', 'nobody', '--', 'sh', '-c', script]);
    return { code: 0, stderr: '' };
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    return { code: e.code ?? -1, stderr: e.stderr ?? '' };
  }
}

test('a user registers its own process, receives forks, unregisters; nothing more', async () => {
  const d = await Daemon.start(tmp.join('self'), ['--signal', '40', '--allow-self-register']);
  expect(fs.statSync(d.file('processes')).mode & 0o777).toBe(0o666);
  expect(fs.statSync(d.file('signal')).mode & 0o777).toBe(0o644);

  // A registrant running as nobody registers itself.
  // setpriv execs the consumer itself (runuser would fork it and not pass SIGKILL on, leaving
  // it and its pipes behind).
  const consumer = spawnChild('setpriv', [
    '--reuid=nobody',
    '--regid=nogroup',
    '--clear-groups',
    '--',
    consumerBin,
    ...consumerArgs(d.file('processes')),
  ]);
  await consumer.waitForLine(/^ready$/, 'stdout');
  const pid = await waitFor('the consumer as nobody', () => {
    const ids = d.listed();
    return ids.length === 1 ? ids[0] : undefined;
  });
  expect(pid).toBe(consumer.pid);
  expect(fs.statSync(`/proc/${pid}`).uid).toBe(
    Number((await execFileAsync('id', ['-u', 'nobody'])).stdout),
  );
  const line = await d.waitForLine(
    new RegExp(`pid ${pid} \\(rt_consumer\\) registered by pid ${pid} `),
    'stderr',
  );
  expect(line).toMatch(/, uid \d+$/);

  const forks = await runForker(forkerBin, 2, 1);
  await waitFor('its forks', () =>
    forks.every(([, c]) => parseSignals(consumer.stdout).some((s) => s.val === c))
      ? true
      : undefined,
  );

  // Somebody else's process, unregistering somebody else's registration, the signal: EACCES.
  const EACCES = -13;
  expect(await writeAsNobody(d.file('processes'), `${process.pid}\n`)).toBe(EACCES);
  expect(await writeAsNobody(d.file('processes'), `-${pid}\n`)).toBe(EACCES);
  // signal stays 0644: the kernel refuses the open itself.
  expect((await asNobody(`echo 41 > ${d.file('signal')}`)).stderr).toMatch(/Permission denied/);
  expect(d.listed()).toEqual([pid]);
  expect(fs.readFileSync(d.file('signal'), 'utf8')).toBe('40\n');

  // Root still may.
  fs.writeFileSync(d.file('processes'), `-${pid}`);
  expect(d.listed()).toEqual([]);
});

test('a user unregisters its own registration (a shell that registered itself)', async () => {
  const d = await Daemon.start(tmp.join('shell'), ['--signal', '40', '--allow-self-register']);
  const f = d.file('processes');
  const run = await asNobody(
    `trap "" 40; echo $$ > ${f} && cat ${f} && echo -$$ > ${f} && cat ${f}`,
  );
  expect(run.code).toBe(0);
  expect(d.listed()).toEqual([]);
});

test('without the option, a user cannot write processes at all', async () => {
  const d = await Daemon.start(tmp.join('off'), ['--signal', '40']);
  expect(fs.statSync(d.file('processes')).mode & 0o777).toBe(0o644);
  // The kernel refuses the open itself (mode 0644, default_permissions).
  const run = await asNobody(`trap "" 40; echo $$ > ${d.file('processes')}`);
  expect(run.stderr).toMatch(/Permission denied/);
  expect(d.listed()).toEqual([]);
});
