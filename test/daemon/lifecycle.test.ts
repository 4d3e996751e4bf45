/**
 * The daemon's life as a user sees it: start, ready, stop, and every start-up error a user can
 * hit, each a single clear line and a non-zero exit.
 */
import fs from 'node:fs';
import {
  AS_NOBODY,
  CLI,
  TempDir,
  compileFixture,
  execFileAsync,
  isMounted,
  parseSignals,
  runForker,
  spawnChild,
  cleanupAll,
  forksSinceBoot,
  schedulerRuns,
  waitFor,
  waitForStill,
} from '../support';
import { Daemon, RELAY_SIGNAL, consumerArgs, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;

beforeAll(() => {
  tmp = new TempDir();
});

afterAll(cleanupAll);

/** The environment of a daemon started outside systemd: nobody listens for sd_notify. */
function outsideSystemd(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.NOTIFY_SOCKET;
  delete env.WATCHDOG_USEC;
  return env;
}

/** Runs the daemon expecting it to refuse to start; returns its exit code and stderr lines. */
async function expectRefusal(
  argv: string[],
  prefix: string[] = [],
): Promise<{ code: number | null; errors: string[] }> {
  const cmd = [...prefix, process.execPath, CLI, ...argv];
  const child = spawnChild(cmd[0], cmd.slice(1));
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), 30000);
  const { code } = await child.exited;
  clearTimeout(timer);
  return { code, errors: child.stderr.filter((l) => /error/.test(l)) };
}

test('logs ready only once the mount is live, and SIGTERM unmounts and exits 0', async () => {
  const mp = tmp.join('lifecycle');
  const d = new Daemon(mp, ['--signal', '40']);
  await d.waitForLine(/ready: relaying forks/, 'stderr', 20000);
  // "ready" was printed: the mount must already be there, with exactly the two files.
  expect(isMounted(mp)).toBe(true);
  expect(fs.readdirSync(mp).sort()).toEqual(['processes', 'signal', 'stats']);
  expect(fs.readFileSync(d.file('signal'), 'utf8')).toBe('40\n');
  // The mountpoint did not exist: the daemon created it.
  const { code, signal } = await d.stop('SIGTERM');
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  expect(isMounted(mp)).toBe(false);
});

test('SIGINT (Ctrl-C) also unmounts and exits 0', async () => {
  const mp = tmp.join('sigint');
  const d = await Daemon.start(mp);
  const { code } = await d.stop('SIGINT');
  expect(code).toBe(0);
  expect(isMounted(mp)).toBe(false);
});

test('idle outside systemd, the main thread sleeps: seconds on end without a wake-up', async () => {
  // Nobody listens for STATUS= here, so nothing is built for it every 5 s (the main thread's
  // only periodic wake-up of an idle daemon outside systemd).
  const d = await Daemon.start(
    tmp.join('idle'),
    ['--signal', '40', '--no-state'],
    outsideSystemd(),
  );
  try {
    // Start-up work (a GC some seconds after start, for one) may wake it; after that, 6 s
    // without a wake-up must come within the liveness bound.
    await waitForStill(
      "the idle daemon's main thread's run count",
      () => schedulerRuns(d.pid),
      6000,
      45_000,
    );
  } finally {
    await d.stop('SIGTERM');
  }
}, 90_000);

test('idle, the receive worker sleeps too, until a fork comes, and relays that fork', async () => {
  const [registrantBin, forkerBin] = await Promise.all([
    compileFixture('rt_consumer', tmp.path),
    compileFixture('forker', tmp.path),
  ]);
  const d = await Daemon.start(
    tmp.join('idle-worker'),
    ['--signal', String(RELAY_SIGNAL), '--no-state', '--log-level', 'debug'],
    outsideSystemd(),
  );
  try {
    const tid = Number(
      /thread (\d+)/.exec(await d.waitForLine(/the receive worker is thread \d+/, 'stderr'))?.[1],
    );
    // Every fork on the machine wakes the worker (it relays them all), so a quiet spell is one
    // with no fork anywhere. The worker's receive timeout (1 s) comes once after the last fork;
    // before this change it came every second for good.
    const workerSleeps = async (what: string): Promise<void> => {
      await waitForStill(
        `${what}: the receive worker's run count and the forks on the machine`,
        () => `${schedulerRuns(d.pid, tid)} ${forksSinceBoot()}`,
        4000,
        45_000,
      );
    };
    await workerSleeps('after start-up');

    // A registration rings the worker's doorbell (it watches the new pidfd); then it sleeps again.
    const reg = spawnChild(registrantBin, consumerArgs(d.file('processes')));
    await reg.waitForLine(/^ready$/, 'stdout');
    expect(d.listed()).toContain(reg.pid);
    await workerSleeps('after a registration');

    // The first fork after a quiet spell wakes it, and is relayed.
    const forks = await runForker(forkerBin, 2, 0);
    const parent = forks[0][0];
    const got = await waitFor('the signals of the forks after the quiet spell', () => {
      const mine = parseSignals(reg.stdout).filter((s) => s.pid === parent);
      return mine.length >= forks.length && mine;
    });
    expect(got.map((s) => s.val).sort()).toEqual(forks.map(([, child]) => child).sort());
    await reg.stop();
    // Its exit is seen on its pidfd, with no fork to wake the worker: it leaves `processes`.
    await waitFor('the exited registrant to leave processes', () => !d.listed().includes(reg.pid));
  } finally {
    await d.stop('SIGTERM');
  }
}, 150_000);

test('warns about signal 33, the patch default that glibc reserves', async () => {
  const mp = tmp.join('sig33');
  const d = await Daemon.start(mp, []);
  expect(fs.readFileSync(d.file('signal'), 'utf8')).toBe('33\n');
  expect(d.stderr.some((l) => /warn/.test(l) && /33/.test(l) && /glibc/.test(l))).toBe(true);
  await d.shutdown();
});

test('a stale mount left by a killed daemon is cleared at start', async () => {
  const mp = tmp.join('stale');
  const first = await Daemon.start(mp);
  await first.stop('SIGKILL');
  expect(isMounted(mp)).toBe(true);
  await expect(fs.promises.stat(mp)).rejects.toMatchObject({ code: 'ENOTCONN' });

  const second = await Daemon.start(mp);
  expect(second.stderr.some((l) => /stale/i.test(l))).toBe(true);
  expect(fs.readFileSync(second.file('signal'), 'utf8')).toBe('40\n');
  await second.shutdown();
  expect(isMounted(mp)).toBe(false);
});

test("serves with libuv's pool at 2 threads, the least it accepts", async () => {
  const mp = tmp.join('pool-2');
  const d = await Daemon.start(mp, ['--signal', '40'], {
    ...process.env,
    UV_THREADPOOL_SIZE: '2',
  });
  try {
    // The daemon is another process: these reads are answered by its FUSE wait on one pool
    // thread while its start-up fs work (state file, mountinfo) had the other.
    for (let i = 0; i < 8; i++) expect(fs.readFileSync(d.file('signal'), 'utf8')).toBe('40\n');
    fs.writeFileSync(d.file('signal'), '41\n');
    expect(fs.readFileSync(d.file('signal'), 'utf8')).toBe('41\n');
    expect((await d.stop('SIGTERM')).code).toBe(0);
  } finally {
    await d.shutdown();
  }
  expect(isMounted(mp)).toBe(false);
});

describe('refuses to start with one clear line', () => {
  test('when not root', async () => {
    const mp = tmp.join('notroot');
    const { code, errors } = await expectRefusal(
      ['--mountpoint', mp, '--signal', '40'],
      [...AS_NOBODY],
    );
    expect(code).not.toBe(0);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/root/);
  });

  test("when UV_THREADPOOL_SIZE leaves libuv's pool one thread (the FUSE wait would hold it)", async () => {
    for (const value of ['1', '0']) {
      const mp = tmp.join(`pool-${value}`);
      const { code, errors } = await expectRefusal(
        ['--mountpoint', mp, '--signal', '40'],
        ['env', `UV_THREADPOOL_SIZE=${value}`],
      );
      expect(code).not.toBe(0);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(/UV_THREADPOOL_SIZE.*at least 2.*unset UV_THREADPOOL_SIZE/);
      expect(isMounted(mp)).toBe(false);
    }
  });

  test('when the mountpoint is not a directory', async () => {
    const file = tmp.join('a-file');
    fs.writeFileSync(file, 'x');
    const { code, errors } = await expectRefusal(['--mountpoint', file, '--signal', '40']);
    expect(code).not.toBe(0);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/not a directory/i);
  });

  test('when the mountpoint is busy (something is mounted there)', async () => {
    const mp = tmp.join('busy');
    fs.mkdirSync(mp);
    await execFileAsync('mount', ['-t', 'tmpfs', 'relayfork-test', mp]);
    try {
      const { code, errors } = await expectRefusal(['--mountpoint', mp, '--signal', '40']);
      expect(code).not.toBe(0);
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(/busy|already/i);
    } finally {
      await execFileAsync('umount', [mp]);
    }
  });

  test('when another relayfork already serves the mountpoint', async () => {
    const mp = tmp.join('twice');
    const d = await Daemon.start(mp);
    const { code, errors } = await expectRefusal(['--mountpoint', mp, '--signal', '40']);
    expect(code).not.toBe(0);
    expect(errors).toHaveLength(1);
    // The first daemon is untouched.
    expect(fs.readFileSync(d.file('signal'), 'utf8')).toBe('40\n');
    await d.shutdown();
  });

  test('when /dev/fuse is missing', async () => {
    const mp = tmp.join('nofuse');
    // A private mount namespace whose /dev lacks fuse.
    const script = 'mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 && exec "$@"';
    const { code, errors } = await expectRefusal(
      ['--mountpoint', mp, '--signal', '40'],
      ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, 'sh'],
    );
    expect(code).not.toBe(0);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/\/dev\/fuse/);
  });

  test('outside the initial pid namespace, where the proc connector is silent', async () => {
    const mp = tmp.join('pidns');
    const { code, errors } = await expectRefusal(
      ['--mountpoint', mp, '--signal', '40'],
      ['unshare', '--pid', '--fork', '--mount-proc'],
    );
    expect(code).not.toBe(0);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/namespace/);
    expect(errors[0]).toMatch(/--pid=host/);
    expect(isMounted(mp)).toBe(false);
  });
});

test('--log-format journal: every line carries its sd-daemon priority, no timestamp', async () => {
  const d = await Daemon.start(tmp.join('journal'), ['--signal', '40', '--log-format', 'journal']);
  await d.waitForLine(/^<6>ready: /, 'stderr');
  const { code } = await d.stop('SIGTERM');
  expect(code).toBe(0);
  const lines = d.stderr.filter((l) => l !== '');
  expect(lines.length).toBeGreaterThan(2);
  for (const line of lines) expect(line).toMatch(/^<[3467]>[^<\d]/);
});
