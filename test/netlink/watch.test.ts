/**
 * `relayfork watch` end to end: runWatch() in a child node process (the .ts sources, see
 * test/support), reading the real kernel; the test forks a known child and reads the lines.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import {
  ROOT as REPO,
  finished,
  nodeEvalArgs,
  run,
  spawnChild,
  stopAllChildren,
  waitFor,
  type Ran,
} from '../support';
import type { WatchOptions } from '../../src/watch';

function watchArgs(options: WatchOptions): string[] {
  return nodeEvalArgs(
    `require(${JSON.stringify(path.join(REPO, 'src/watch.ts'))})` +
      `.runWatch(${JSON.stringify(options)}).then((code) => { process.exitCode = code; });`,
  );
}

interface Watching {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  done: Promise<Ran>;
}

afterEach(stopAllChildren);

/** Start `watch` and wait until it listens. */
async function startWatch(options: WatchOptions): Promise<Watching> {
  const { proc: child } = spawnChild(process.execPath, watchArgs(options));
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const done = finished(child);
  await waitFor('watch to listen', () => err.includes('listening for'), 20_000);
  return { child, stdout: () => out, stderr: () => err, done };
}

/** Fork `sh -c 'exit <status>'`; returns its pid once it has been reaped. */
async function forkChild(status: number): Promise<number> {
  const child = spawnChild('/bin/sh', ['-c', `exit ${status}`]);
  await child.exited;
  return child.pid;
}

test('a bad --events kind prints one line and exits 2', async () => {
  const ran = await run(process.execPath, watchArgs({ events: 'fork,bogus' }));
  expect(ran.code).toBe(2);
  expect(ran.stdout).toBe('');
  expect(ran.stderr).toBe(
    "relayfork watch: unknown event kind 'bogus' in --events; choose from fork,exec,uid,gid,sid,ptrace,comm,coredump,exit\n",
  );
});

test('text: one line per event with time, kind and pids; SIGINT prints the counters', async () => {
  const watch = await startWatch({ events: 'fork,exec,exit' });
  expect(watch.stderr()).toContain('listening for fork,exec,exit (filtered subscription)');
  const pid = await forkChild(5);
  const lines = (): string[] =>
    watch
      .stdout()
      .split('\n')
      .filter((l) => new RegExp(`(child|pid)=${pid}( |$)`).test(l));
  await waitFor('the child exit line', () => lines().some((l) => / exit /.test(l)));
  const time = '\\d\\d:\\d\\d:\\d\\d\\.\\d{6}';
  expect(lines()).toEqual([
    expect.stringMatching(new RegExp(`^${time} fork     parent=${process.pid} child=${pid}$`)),
    expect.stringMatching(new RegExp(`^${time} exec     pid=${pid}$`)),
    expect.stringMatching(
      new RegExp(`^${time} exit     pid=${pid} status=5 parent=${process.pid}$`),
    ),
  ]);

  watch.child.kill('SIGINT');
  const ran = await watch.done;
  expect(ran.code).toBe(0);
  expect(ran.stderr).toMatch(
    /relayfork watch: received fork=\d+ exec=\d+ exit=\d+ \(total \d+\)\nrelayfork watch: overruns=0 dropped=0 sequence-gaps=0 malformed=0\n$/,
  );
});

test('--json: one object per line, timestamps as decimal strings; SIGTERM stops it too', async () => {
  const watch = await startWatch({ json: true });
  const pid = await forkChild(0);
  const objects = (): Record<string, unknown>[] =>
    watch
      .stdout()
      .split('\n')
      .slice(0, -1) // whole lines only: a pipe may deliver a long write in pieces
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((o) => o.childTgid === pid || o.processTgid === pid);
  await waitFor('the child exit object', () => objects().some((o) => o.kind === 'exit'));
  const [fork, exec, exit] = objects();
  expect(fork).toMatchObject({
    kind: 'fork',
    parentPid: process.pid,
    parentTgid: process.pid,
    childPid: pid,
    childTgid: pid,
  });
  expect(exec).toMatchObject({ kind: 'exec', processPid: pid, processTgid: pid });
  expect(exit).toMatchObject({ kind: 'exit', processPid: pid, exitCode: 0, exitSignal: 17 });
  for (const o of [fork, exec, exit]) {
    expect(o.timestampNs).toMatch(/^\d+$/);
    expect(typeof o.cpu).toBe('number');
    // Wall-clock time from the kernel's monotonic timestamp: within a minute of now.
    expect(Math.abs(Date.parse(String(o.time)) - Date.now())).toBeLessThan(60_000);
  }

  watch.child.kill('SIGTERM');
  const ran = await watch.done;
  expect(ran.code).toBe(0);
  expect(ran.stderr).toMatch(/received fork=\d+ exec=\d+ uid=\d+ .* exit=\d+ \(total \d+\)/);
});

test('in a new pid namespace it prints the namespace line and exits 1', async () => {
  const ran = await run('unshare', [
    '--pid',
    '--fork',
    '--mount-proc',
    process.execPath,
    ...watchArgs({ events: 'fork' }),
  ]);
  expect(ran.code).toBe(1);
  expect(ran.stdout).toBe('');
  expect(ran.stderr.split('\n')).toEqual([
    expect.stringMatching(
      /^relayfork watch: .*outside the initial pid or user namespace.*--pid=host --net=host/,
    ),
    '',
  ]);
});

test('the "listening" header comes before the first event, stdout and stderr on one terminal', async () => {
  // Both streams into one pipe, as on a terminal: the order of the lines is the order written.
  const { proc: child } = spawnChild('/bin/sh', [
    '-c',
    'exec "$0" "$@" 2>&1',
    process.execPath,
    ...watchArgs({}),
  ]);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const done = finished(child);
  // Every kind: the subscription's own confirmation forks are events too, the first ones seen.
  await waitFor('watch to listen', () => out.includes('listening for'), 20_000);
  const pid = await forkChild(0);
  await waitFor('the fork line', () => out.includes(`child=${pid}`));
  const lines = out.split('\n');
  expect(lines[0]).toMatch(/^relayfork watch: listening for fork,exec,/);
  expect(lines.slice(1).some((l) => / fork +parent=/.test(l))).toBe(true);
  child.kill('SIGINT');
  expect((await done).code).toBe(0);
});
