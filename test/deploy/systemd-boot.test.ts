/**
 * systemd/relayfork.service under a real systemd (PID 1), booted with systemd-nspawn by
 * ../shared/tools/systemd-env.sh, the way a user installs it:
 * - a probe with the unit's exact sandbox proves that what the daemon needs still works there
 *   (FUSE mount, signals to another user's process, netlink, sd_notify READY/STATUS/watchdog, the
 *   host's mount namespace), since the daemon itself cannot get that far in a container;
 * - from a checkout (install-service) and after a global npm install (the shipped unit as is),
 *   `systemctl start relayfork` fails with the daemon's one-line namespace message in
 *   `systemctl status` and the journal: the container has its own pid namespace, where the proc
 *   connector is silent. That is the error a user meets; the relay itself is tested on the host.
 *
 * The container runs with --volatile=overlay: everything installed in it vanishes at power-off.
 */
import fs from 'node:fs';
import path from 'node:path';
import { renderUnit, UNIT_TEMPLATE_PATH } from '../../src/systemd/installService';
import { ROOT, TempDir, execFileAsync, removeAllTempDirs, sleep, waitFor } from '../support';

/** CI keeps the shared folder next to the project (../shared); override for other layouts. */
const SHARED_TOOLS =
  process.env.RELAYFORK_SHARED_TOOLS ?? path.resolve(ROOT, '..', 'shared', 'tools');
const SYSTEMD_ENV = path.join(SHARED_TOOLS, 'systemd-env.sh');
/** Where the project and the test's own files appear inside the container. */
const CT_PROJECT = '/opt/relayfork';
const CT_TEST = '/opt/relayfork-test';
const CT_NPM = '/usr/lib/node_modules/npm/bin/npm-cli.js';
/**
 * CAP_KILL (5) | CAP_NET_ADMIN (12) | CAP_SYS_ADMIN (21) | CAP_SYS_NICE (23),
 * include/uapi/linux/capability.h.
 */
const UNIT_CAPS = ((1 << 5) | (1 << 12) | (1 << 21) | (1 << 23)).toString(16).padStart(16, '0');

let tmp: string;
let env: NodeJS.ProcessEnv;
let started = false;
const timings: string[] = [];

async function timed<T>(what: string, run: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  try {
    return await run();
  } finally {
    timings.push(`${what}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
}

async function systemdEnv(...args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(SYSTEMD_ENV, args, { env, maxBuffer: 16 << 20 });
    return stdout;
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(
      `systemd-env.sh ${args.join(' ')} failed: ${e.message}\n${e.stdout}${e.stderr}`,
      { cause: err },
    );
  }
}

/** Run a command inside the container; rejects with its output when it exits non-zero. */
function inContainer(...args: string[]): Promise<string> {
  return systemdEnv('exec', ...args);
}

/** Run a command inside the container that is expected to fail; resolves to its output. */
async function inContainerFailing(...args: string[]): Promise<string> {
  try {
    await execFileAsync(SYSTEMD_ENV, ['exec', ...args], { env });
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    return `${e.stdout}${e.stderr}`;
  }
  throw new Error(`expected ${args.join(' ')} to fail in the container`);
}

async function show(unit: string, ...properties: string[]): Promise<Record<string, string>> {
  const out = await inContainer('systemctl', 'show', unit, ...properties.map((p) => `-p${p}`));
  const values: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) values[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return values;
}

/** A position in the container's journal, to read only what comes after it. */
async function journalCursor(): Promise<string> {
  const out = await inContainer(
    'journalctl',
    '--no-pager',
    '-n',
    '1',
    '--show-cursor',
    '-o',
    'cat',
  );
  const cursor = /^-- cursor: (.*)$/m.exec(out)?.[1];
  if (cursor === undefined) throw new Error(`no journal cursor in: ${out}`);
  return cursor;
}

interface JournalEntry {
  MESSAGE: string;
  /** syslog priority as journald stored it: from the sd-daemon prefix of the line. */
  PRIORITY?: string;
  _CMDLINE?: string;
}

/** The unit's journal entries after `cursor`. */
async function journalAfter(cursor: string, unit: string): Promise<JournalEntry[]> {
  const out = await inContainer(
    'journalctl',
    '--no-pager',
    '-o',
    'json',
    `--after-cursor=${cursor}`,
    '-u',
    unit,
  );
  return out
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as JournalEntry);
}

async function stopAndForget(unit: string): Promise<void> {
  await inContainer('systemctl', 'stop', unit);
  await inContainer('systemctl', 'reset-failed', unit).catch(() => undefined);
}

async function waitForState(unit: string, state: string, timeoutMs: number): Promise<void> {
  let now = '';
  await waitFor(
    () => `${unit} to be ${state} (it is ${now})`,
    async () => (now = (await show(unit, 'ActiveState')).ActiveState) === state,
    timeoutMs,
  );
}

beforeAll(async () => {
  if (process.geteuid?.() !== 0)
    throw new Error('the systemd boot test needs root (systemd-nspawn)');
  if (!fs.existsSync(SYSTEMD_ENV)) {
    throw new Error(
      `${SYSTEMD_ENV} is missing: set RELAYFORK_SHARED_TOOLS to the shared tools folder`,
    );
  }
  for (const built of ['cli.js', 'daemon.js', 'systemd/notify.js', 'native/libc.js']) {
    const file = path.join(ROOT, 'dist', built);
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: run npm run build first`);
  }
  tmp = new TempDir('relayfork-nspawn-').path;
  // Our own state dir and machine name, so that this container is ours alone to power off.
  const node = fs.realpathSync(process.execPath);
  const npm = path.resolve(fs.realpathSync(path.join(path.dirname(node), 'npm')), '..', '..');
  // The host's NODE_EXTRA_CA_CERTS names a file the container lacks (node would warn on stderr).
  const hostEnv = { ...process.env };
  delete hostEnv.NODE_EXTRA_CA_CERTS;
  env = {
    ...hostEnv,
    ENVCHECK_DIR: path.join(tmp, 'envcheck'),
    MACHINE: `relayfork-test-${process.pid}`,
    NSPAWN_ARGS: [
      '--volatile=overlay',
      // nspawn keeps CAP_NET_ADMIN only with a private network; a host has it.
      '--capability=CAP_NET_ADMIN',
      '--bind=/dev/fuse',
      `--bind-ro=${node}:/usr/bin/node`,
      `--bind-ro=${npm}:/usr/lib/node_modules/npm`,
      `--bind-ro=${ROOT}:${CT_PROJECT}`,
      `--bind-ro=${tmp}:${CT_TEST}`,
    ].join(' '),
  };

  // Files the container reads: the FUSE probe, a package as `npm pack` makes it, the CA bundle
  // (npm's registry access goes through this machine's TLS proxy).
  await execFileAsync('gcc', [
    '-O2',
    '-static',
    '-o',
    path.join(tmp, 'fuse_check'),
    path.join(SHARED_TOOLS, 'src', 'fuse_check.c'),
  ]);
  const { stdout: packed } = await execFileAsync(
    'npm',
    ['pack', '--ignore-scripts', '--pack-destination', tmp],
    { cwd: ROOT },
  );
  fs.renameSync(
    path.join(tmp, packed.trim().split('\n').pop() ?? ''),
    path.join(tmp, 'relayfork.tgz'),
  );
  fs.copyFileSync('/etc/ssl/certs/ca-certificates.crt', path.join(tmp, 'ca.crt'));

  started = true;
  await timed('nspawn boot (systemd-env.sh up)', () => systemdEnv('up'));
  expect((await inContainer('systemctl', 'is-system-running')).trim()).toMatch(/running|degraded/);
});

afterAll(async () => {
  if (started) await systemdEnv('down').catch((err) => process.stderr.write(`${err}\n`));
  await removeAllTempDirs();
  process.stderr.write(`systemd-boot timings:\n  ${timings.join('\n  ')}\n`);
});

describe('a probe with the unit sandbox', () => {
  let targetPid: number;

  beforeAll(async () => {
    // A process of another user, for the CAP_KILL check.
    await inContainer('systemd-run', '--uid=nobody', '--unit=relayfork-test-target', 'sleep', '1h');
    targetPid = Number((await show('relayfork-test-target', 'MainPID')).MainPID);
    expect(targetPid).toBeGreaterThan(1);
    const template = fs.readFileSync(UNIT_TEMPLATE_PATH, 'utf8');
    for (const [name, flags] of [
      ['relayfork-probe', ''],
      ['relayfork-probe-silent', ' --no-watchdog'],
    ]) {
      const probe = `/usr/bin/node ${CT_PROJECT}/test/deploy/fixtures/service-probe.js ${CT_PROJECT} ${targetPid} ${CT_TEST}/fuse_check${flags}`;
      // A 2 s watchdog, so that a missing ping shows within the test.
      const unit = renderUnit(template, probe).replace(/^WatchdogSec=.*$/m, 'WatchdogSec=2s');
      fs.writeFileSync(path.join(tmp, `${name}.service`), unit);
      await inContainer('cp', `${CT_TEST}/${name}.service`, '/etc/systemd/system/');
    }
    await inContainer('systemctl', 'daemon-reload');
  });

  afterAll(async () => {
    for (const unit of ['relayfork-probe', 'relayfork-probe-silent', 'relayfork-test-target']) {
      await stopAndForget(unit).catch(() => undefined);
    }
  });

  test('READY reaches systemd, and mount, signals, netlink and the watchdog all work', async () => {
    await timed('probe start', () => inContainer('systemctl', 'start', 'relayfork-probe'));
    const first = await show('relayfork-probe', 'ActiveState', 'StatusText', 'MainPID');
    expect(first.ActiveState).toBe('active');
    expect(first.StatusText).toBe(`capeff=${UNIT_CAPS} kill=ok fuse=ok netlink=ok nice=ok`);
    // The service shares PID 1's mount namespace: its FUSE mount is everyone's.
    const ns = await inContainer('readlink', `/proc/${first.MainPID}/ns/mnt`, '/proc/1/ns/mnt');
    const [own, pid1] = ns.trim().split('\n');
    expect(own).toBe(pid1);

    // Two and a half watchdog intervals later it is still the same, unrestarted process.
    await sleep(5000);
    const later = await show('relayfork-probe', 'ActiveState', 'MainPID', 'NRestarts');
    expect(later).toEqual({ ActiveState: 'active', MainPID: first.MainPID, NRestarts: '0' });

    await inContainer('systemctl', 'stop', 'relayfork-probe');
    expect(await show('relayfork-probe', 'ActiveState', 'Result')).toEqual({
      ActiveState: 'inactive',
      Result: 'success',
    });
  });

  test('without the pings the same unit is killed by the watchdog (the check above is real)', async () => {
    await inContainer('systemctl', 'start', 'relayfork-probe-silent');
    await sleep(4000);
    const journal = await inContainer(
      'journalctl',
      '--no-pager',
      '-o',
      'cat',
      '-u',
      'relayfork-probe-silent',
    );
    expect(journal).toMatch(/[Ww]atchdog timeout/);
  });
});

describe('the fd store: systemd keeps the FUSE connection across restarts (relayfork --fd-store)', () => {
  const UNIT = 'relayfork-fdstore';
  const MOUNT = '/run/relayfork-fdstore';
  const READS = '/run/relayfork-fdstore-reads';

  /** The probe's STATUS= ("adopted=... device=...") and pid, once active with a new pid. */
  async function active(
    previousPid?: string,
  ): Promise<{ adopted: string; device: string; pid: string }> {
    const deadline = Date.now() + 30000;
    for (;;) {
      const v = await show(UNIT, 'ActiveState', 'StatusText', 'MainPID', 'NFileDescriptorStore');
      const m = /^adopted=(\w+) device=(\S+)$/.exec(v.StatusText ?? '');
      if (v.ActiveState === 'active' && m && v.MainPID !== previousPid && v.MainPID !== '0') {
        expect(v.NFileDescriptorStore).toBe('1');
        return { adopted: m[1], device: m[2], pid: v.MainPID };
      }
      if (Date.now() > deadline) throw new Error(`${UNIT} not active again: ${JSON.stringify(v)}`);
      await sleep(300);
    }
  }

  async function mountDevice(): Promise<string | undefined> {
    const info = await inContainer('cat', '/proc/1/mountinfo');
    return info
      .split('\n')
      .map((l) => l.split(' '))
      .filter((f) => f[4] === MOUNT)
      .map((f) => f[2])
      .pop();
  }

  beforeAll(async () => {
    const template = fs.readFileSync(UNIT_TEMPLATE_PATH, 'utf8');
    const probe = `/usr/bin/node ${CT_PROJECT}/test/deploy/fixtures/fdstore-probe.js ${CT_PROJECT} ${MOUNT}`;
    // The shipped unit (its sandbox, FileDescriptorStoreMax=1), a 1 s restart delay.
    const unit = renderUnit(template, probe).replace(/^RestartSec=.*$/m, 'RestartSec=1s');
    expect(unit).toMatch(/^FileDescriptorStoreMax=1$/m);
    fs.writeFileSync(path.join(tmp, `${UNIT}.service`), unit);
    await inContainer('cp', `${CT_TEST}/${UNIT}.service`, '/etc/systemd/system/');
    await inContainer('systemctl', 'daemon-reload');
  });

  afterAll(async () => {
    await stopAndForget('relayfork-fdstore-reader').catch(() => undefined);
    await stopAndForget(UNIT).catch(() => undefined);
  });

  /** Run `body`; when it fails, the probe's journal goes into the error (why it remounted). */
  async function withJournal(body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (err) {
      const journal = await inContainer(
        'journalctl',
        '--no-pager',
        '-o',
        'short-monotonic',
        '-u',
        UNIT,
      ).catch((e: unknown) => `(no journal: ${String(e)})`);
      if (err instanceof Error) err.message += `\n--- journal of ${UNIT} ---\n${journal}`;
      throw err;
    }
  }

  test('systemctl restart and kill -9 keep the mount; no read fails ENOTCONN; stop unmounts', () =>
    withJournal(async () => {
      await timed('fd-store probe start', () => inContainer('systemctl', 'start', UNIT));
      const first = await active();
      expect(first.adopted).toBe('false');
      expect(await mountDevice()).toBe(first.device);

      // A reader of the mount for the whole test, each read's outcome on one line of a file: the
      // failure's output unquoted, so that "139" and cat's "Input/output error" on the next line
      // (a read answered, the next request orphaned by the kill) stay one record.
      await inContainer(
        'systemd-run',
        '--unit=relayfork-fdstore-reader',
        'sh',
        '-c',
        `while :; do if p=$(cat ${MOUNT}/pid 2>&1); then echo "ok $p"; else echo fail $p; fi >> ${READS}; sleep 0.05; done`,
      );

      await timed('systemctl restart (fd store)', () => inContainer('systemctl', 'restart', UNIT));
      const second = await active(first.pid);
      expect(second).toMatchObject({ adopted: 'true', device: first.device });

      await inContainer('systemctl', 'kill', '--signal=KILL', UNIT);
      const third = await active(second.pid);
      expect(third).toMatchObject({ adopted: 'true', device: first.device });
      expect(await mountDevice()).toBe(first.device);
      await sleep(1000);
      await inContainer('systemctl', 'stop', 'relayfork-fdstore-reader');

      const reads = (await inContainer('cat', READS)).trim().split('\n');
      // Every server answered in turn, through the one mount.
      for (const pid of [first.pid, second.pid, third.pid]) expect(reads).toContain(`ok ${pid}`);
      // Never ENOTCONN; a read the killed probe had taken and not answered gets EIO at most.
      const failures = reads.filter((l) => !l.startsWith('ok '));
      expect(failures.filter((l) => !/Input\/output error/.test(l))).toEqual([]);

      const journal = await inContainer('journalctl', '--no-pager', '-o', 'cat', '-u', UNIT);
      expect(journal).toMatch(/left .* mounted for the next start/);
      expect(journal).toMatch(/took over the mount at/);

      await inContainer('systemctl', 'stop', UNIT);
      expect(await show(UNIT, 'ActiveState', 'NFileDescriptorStore')).toEqual({
        ActiveState: 'inactive',
        NFileDescriptorStore: '0',
      });
      expect(await mountDevice()).toBeUndefined();
    }));
});

describe('the daemon as a service, in a pid namespace of its own', () => {
  afterEach(async () => {
    await stopAndForget('relayfork').catch(() => undefined);
  });

  /**
   * Start relayfork.service, expect it to fail, and return what `systemctl status` shows and the
   * journal entries of that start.
   */
  async function startExpectingNamespaceFailure(): Promise<{
    status: string;
    journal: JournalEntry[];
  }> {
    await inContainer('systemctl', 'daemon-reload');
    const cursor = await journalCursor();
    await timed('systemctl start relayfork (until it fails)', () =>
      inContainerFailing('systemctl', 'start', 'relayfork'),
    );
    // Restart=on-failure tries again until the start limit (5 in a minute) marks it failed.
    await timed('restarts until the start limit', () => waitForState('relayfork', 'failed', 90000));
    const journal = await journalAfter(cursor, 'relayfork');
    // `systemctl status` shows the journal of the last start: the one a user reads.
    const status = await inContainerFailing(
      'systemctl',
      'status',
      '--no-pager',
      '--lines=20',
      '--full',
      'relayfork',
    );
    return { status, journal };
  }

  /**
   * The daemon's one error line: the cause (the namespace) and the fix (--pid=host). Under the
   * journal it has no "<time> error:" of its own: the sd-daemon prefix <3> became PRIORITY=3.
   */
  const NAMESPACE_ERROR = /proc connector.*namespace.*--pid=host/;
  /**
   * The same line as the unit's STATUS=, which `systemctl status` keeps showing once the unit has
   * failed (its journal excerpt covers only the last moments, without the daemon's line).
   */
  const NAMESPACE_STATUS = /^ *Status: ".*proc connector.*namespace.*--pid=host.*"$/m;

  function daemonError(journal: JournalEntry[]): JournalEntry {
    const entry = journal.find((e) => NAMESPACE_ERROR.test(e.MESSAGE));
    if (entry === undefined) {
      throw new Error(
        `no namespace error in the journal:\n${journal.map((e) => e.MESSAGE).join('\n')}`,
      );
    }
    // journalctl -p err finds it; the daemon's info lines are PRIORITY=6; none carries a
    // timestamp or a "<N>" of its own (journald took the prefix).
    expect(entry.PRIORITY).toBe('3');
    const daemonLines = journal.filter((e) => e._CMDLINE === entry._CMDLINE);
    expect(daemonLines.some((e) => /^open-file limit/.test(e.MESSAGE) && e.PRIORITY === '6')).toBe(
      true,
    );
    for (const e of daemonLines) expect(e.MESSAGE).not.toMatch(/^(<\d>|\d{4}-\d\d-\d\dT)/);
    return entry;
  }

  test('from a checkout: install-service, then systemctl start fails with the namespace message', async () => {
    const unitPath = (
      await inContainer(
        'node',
        '-e',
        `require('${CT_PROJECT}/dist/systemd/installService.js').installService().then((p) => console.log(p))`,
      )
    ).trim();
    expect(unitPath).toBe('/etc/systemd/system/relayfork.service');
    expect(await inContainer('grep', '^ExecStart=', unitPath)).toBe(
      `ExecStart=/usr/bin/node ${CT_PROJECT}/dist/cli.js --signal 40 --fd-store\n`,
    );
    expect(await inContainer('systemd-analyze', 'verify', unitPath)).toBe('');

    const { status, journal } = await startExpectingNamespaceFailure();
    expect(daemonError(journal)._CMDLINE).toBe(
      `/usr/bin/node ${CT_PROJECT}/dist/cli.js --signal 40 --fd-store`,
    );
    expect(status).toMatch(NAMESPACE_STATUS);
    expect(status).toMatch(/Active: failed \(Result: exit-code\)/);
    expect(status).toMatch(/Main PID: \d+ \(code=exited, status=1\/FAILURE\)/);
    expect(journal.filter((e) => NAMESPACE_ERROR.test(e.MESSAGE))).toHaveLength(5);
    // Nothing of the sandbox got in the way before the self-test.
    const messages = journal.map((e) => e.MESSAGE).join('\n');
    expect(messages).not.toMatch(/EPERM|EACCES|not permitted|SIGSYS|Bad system call|core-dump/);
  });

  test('after a global npm install: the shipped unit as is, ExecStart=relayfork', async () => {
    await timed('npm install -g (in the container)', () =>
      inContainer(
        'env',
        `NODE_EXTRA_CA_CERTS=${CT_TEST}/ca.crt`,
        'node',
        CT_NPM,
        'install',
        '--global',
        '--ignore-scripts',
        '--no-audit',
        '--no-fund',
        `${CT_TEST}/relayfork.tgz`,
      ),
    );
    await inContainer(
      'cp',
      '/usr/lib/node_modules/relayfork/systemd/relayfork.service',
      '/etc/systemd/system/relayfork.service',
    );
    expect(
      await inContainer('systemd-analyze', 'verify', '/etc/systemd/system/relayfork.service'),
    ).toBe('');
    expect(await inContainer('readlink', '-f', '/usr/bin/relayfork')).toBe(
      '/usr/lib/node_modules/relayfork/dist/cli.js\n',
    );

    const { status, journal } = await startExpectingNamespaceFailure();
    // systemd found `relayfork` on its search path: the global install's bin (a node script).
    expect(daemonError(journal)._CMDLINE).toBe('node /usr/bin/relayfork --signal 40 --fd-store');
    expect(status).toMatch(NAMESPACE_STATUS);
  });
});
