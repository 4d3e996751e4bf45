/**
 * The daemon with --fd-store, under test/fixtures/fd_store_manager (a stand-in for systemd's
 * fd store: NOTIFY_SOCKET, FDSTORE=1, LISTEN_FDS; the real systemd is tested in
 * test/deploy/systemd-boot.test.ts): kill -9 of the daemon, then a new start, and the mount is
 * the same one, never stale: a reader looping on it sees no error, the registrant gets forks
 * again. SIGTERM outside a systemd restart unmounts and takes the fd back out of the store. A
 * handed-over connection of another shape is refused, and the daemon mounts anew.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import {
  CLI,
  Child,
  TempDir,
  cleanupAll,
  compileFixture,
  isMounted,
  parseSignals,
  runForker,
  spawnChild,
  waitFor,
} from '../support';
import { RELAY_SIGNAL, consumerArgs, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;
let managerBin: string;
let consumerBin: string;
let forkerBin: string;

beforeAll(async () => {
  tmp = new TempDir('relayfork-fdstore-');
  [managerBin, consumerBin, forkerBin] = await Promise.all([
    compileFixture('fd_store_manager', tmp.path),
    compileFixture('rt_consumer', tmp.path),
    compileFixture('forker', tmp.path),
  ]);
});

// The managers run in process groups of their own, with their daemons: cleanup ends each group
// whole, and removes the temp dir with whatever is still mounted in it.
afterAll(cleanupAll);

/** The manager and what it reports; commands go to its stdin. */
class Manager extends Child {
  constructor(mountpoint: string) {
    const argv = [
      tmp.join(`${mountpoint.split('/').pop()}.notify`),
      process.execPath,
      CLI,
      '--mountpoint',
      mountpoint,
      '--signal',
      String(RELAY_SIGNAL),
      '--state',
      `${mountpoint}.state`,
      '--fd-store',
    ];
    super(spawn(managerBin, argv, { stdio: ['pipe', 'pipe', 'pipe'], detached: true }), {
      group: true,
    });
  }

  /** Start the daemon (with the stored fd, if any); returns its pid once it is ready. */
  async startDaemon(command = 'start'): Promise<number> {
    const readyBefore = this.stdout.filter((l) => l === 'ready').length;
    const startedBefore = this.stdout.filter((l) => l.startsWith('started ')).length;
    this.proc.stdin!.write(`${command}\n`);
    const pid = await waitFor('the daemon to start', () => {
      const started = this.stdout.filter((l) => l.startsWith('started '));
      return started.length > startedBefore
        ? Number(started[started.length - 1].split(' ')[1])
        : undefined;
    });
    await waitFor(
      `READY=1 (output so far:\n${this.output()})`,
      () => this.stdout.filter((l) => l === 'ready').length > readyBefore,
      20000,
    );
    return pid;
  }

  async exitOf(pid: number): Promise<void> {
    await waitFor(`pid ${pid} to exit`, () => this.stdout.includes(`exited ${pid}`), 15000);
  }
}

function deviceAt(mountpoint: string): string | undefined {
  const line = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.split(' ')[4] === mountpoint)
    .pop();
  return line?.split(' ')[2];
}

function listed(mountpoint: string): number[] {
  return fs
    .readFileSync(`${mountpoint}/processes`, 'utf8')
    .trim()
    .split(' ')
    .filter(Boolean)
    .map(Number);
}

test('kill -9 and a new start: the same mount throughout, no reader sees ENOTCONN', async () => {
  const mp = tmp.join('crash');
  const manager = new Manager(mp);
  const first = await manager.startDaemon();
  await waitFor('the fd in the store', () =>
    manager.stdout.some((l) => l.startsWith('stored fuse.')),
  );
  const device = deviceAt(mp);
  expect(device).toMatch(/^0:\d+$/);

  const consumer = spawnChild(consumerBin, consumerArgs(`${mp}/processes`));
  await consumer.waitForLine(/^ready$/, 'stdout');
  expect(listed(mp)).toEqual([consumer.pid]);

  // A reader of the mount that records every failure, across the whole hand-over; a failure's
  // output unquoted, so that what cat printed before its error stays on the error's line.
  const reader = spawnChild(
    'sh',
    [
      '-c',
      `while :; do if out=$(cat ${mp}/signal 2>&1); then echo "ok $out"; else echo fail $out; fi; sleep 0.02; done`,
    ],
    { group: true },
  );
  await waitFor('the reader', () => reader.stdout.length > 5);

  process.kill(first, 'SIGKILL');
  await manager.exitOf(first);
  expect(deviceAt(mp)).toBe(device); // still mounted, its connection held by the store

  const readsBefore = reader.stdout.length;
  const second = await manager.startDaemon();
  expect(second).not.toBe(first);
  await waitFor('reads after the restart', () => reader.stdout.length > readsBefore + 10);
  await reader.stop('SIGKILL');
  // Never ENOTCONN. The one error a reader can meet: its request was read by the killed daemon
  // and never answered; the successor answers such an orphan EIO (and logs it) rather than let
  // it hang until the request timeout aborts the whole mount.
  const failures = reader.stdout.filter((l) => !l.startsWith('ok '));
  expect(failures.filter((l) => !/Input\/output error/.test(l))).toEqual([]);
  const orphans = manager.stderr.some((l) => /requests it had left unanswered got EIO/.test(l));
  expect(failures.length === 0 || orphans).toBe(true);
  expect(deviceAt(mp)).toBe(device);
  expect(manager.stdout.filter((l) => l.startsWith('stored '))).toHaveLength(1);

  // The registration came back from the state file and forks flow to it again.
  expect(listed(mp)).toEqual([consumer.pid]);
  const before = parseSignals(consumer.stdout).length;
  const forks = await runForker(forkerBin, 2, 2);
  await waitFor('the forks after the hand-over', () => {
    const got = parseSignals(consumer.stdout).slice(before);
    return forks.every(([p, c]) => got.some((s) => s.pid === p && s.val === c));
  });

  // SIGTERM with no systemd restart pending: a stop. Unmounted, and the fd leaves the store.
  process.kill(second, 'SIGTERM');
  await manager.exitOf(second);
  await waitFor('the fd out of the store', () =>
    manager.stdout.some((l) => l.startsWith('removed fuse.') || l.startsWith('dropped fuse.')),
  );
  expect(isMounted(mp)).toBe(false);
  await consumer.stop('SIGKILL');
  await manager.stop('SIGTERM');
});

test('a connection of another shape is refused: the daemon mounts anew and works', async () => {
  const mp = tmp.join('refused');
  const manager = new Manager(mp);
  const first = await manager.startDaemon();
  const stored = await waitFor('the fd in the store', () =>
    manager.stdout.find((l) => l.startsWith('stored fuse.')),
  );
  const name = stored.split(' ')[1];
  process.kill(first, 'SIGKILL');
  await manager.exitOf(first);

  // The same fd under a name whose tree hash is another version's.
  const forged = name.replace(/\.[0-9a-f]{8}$/, '.00000000');
  const daemonLines = manager.stderr.length;
  const second = await manager.startDaemon(`start-as ${forged}`);
  await waitFor('the refusal in the log', () =>
    manager.stderr
      .slice(daemonLines)
      .some((l) => /not taking over .*another set of files.*; mounting anew/.test(l)),
  );
  expect(fs.readFileSync(`${mp}/signal`, 'utf8')).toBe(`${RELAY_SIGNAL}\n`);
  // The refused one left the store (removed by the daemon, or dropped by the store when its
  // connection ended, whichever came first), and the new one took its place.
  await waitFor(
    'the new connection in the store',
    () =>
      manager.stdout.some((l) => l === `removed ${forged}` || l === `dropped ${forged}`) &&
      manager.stdout.filter((l) => l.startsWith('stored fuse.')).length === 2,
  );
  process.kill(second, 'SIGTERM');
  await manager.exitOf(second);
  expect(isMounted(mp)).toBe(false);
  await manager.stop('SIGTERM');
});
