/**
 * The pure parts of the fd-store hand-over (issue 9 §1): FDNAME rules, the handover name of a
 * FUSE connection, the unit and restart-job detection, LISTEN_* parsing. The hand-over itself is
 * tested for real in test/fs/handover.test.ts, test/daemon/fdStore.test.ts and, under systemd,
 * test/deploy/systemd-boot.test.ts.
 */
import { handoverName, parseHandoverName, treeSignature } from '../../src/fs/handover';
import { takeListenFds } from '../../src/systemd/listenFds';
import { isValidFdName } from '../../src/systemd/notify';
import fs from 'node:fs';
import { hasRestartJob, ownUnit, restartPending } from '../../src/systemd/restartPending';
import { TempDir } from '../support';

describe('handover names', () => {
  const description = { protocolMajor: 7, protocolMinor: 41, device: '0:55', tree: 'a1b2c3d4' };

  test('round trip, and a valid systemd FDNAME', () => {
    const name = handoverName(description);
    expect(name).toBe('fuse.7.41.0.55.a1b2c3d4');
    expect(parseHandoverName(name)).toEqual(description);
    expect(isValidFdName(name)).toBe(true);
  });

  test.each([
    '',
    'fuse',
    'fuse.7.41.0.55',
    'fuse.7.41.0:55.a1b2c3d4',
    'fuse.7.41.0.55.A1B2C3D4',
    'x.7.41.0.55.a1b2c3d4',
    'unknown',
    'stored',
  ])('%j is not a handover name', (name) => expect(parseHandoverName(name)).toBeUndefined());

  test('the tree signature follows names, modes, order and the file system name', () => {
    const files = [
      { name: 'processes', mode: 0o100644 },
      { name: 'signal', mode: 0o100644 },
    ];
    const base = treeSignature('relayfork', files);
    expect(base).toMatch(/^[0-9a-f]{8}$/);
    expect(
      treeSignature(
        'relayfork',
        files.map((f) => ({ ...f })),
      ),
    ).toBe(base);
    expect(treeSignature('other', files)).not.toBe(base);
    expect(treeSignature('relayfork', [files[1], files[0]])).not.toBe(base);
    expect(treeSignature('relayfork', [files[0], { name: 'signal', mode: 0o100444 }])).not.toBe(
      base,
    );
    expect(treeSignature('relayfork', [...files, { name: 'stats', mode: 0o100444 }])).not.toBe(
      base,
    );
  });
});

test('FDNAME: printable ASCII without ":", 1..255 bytes', () => {
  expect(isValidFdName('fuse')).toBe(true);
  expect(isValidFdName('a'.repeat(255))).toBe(true);
  expect(isValidFdName('a'.repeat(256))).toBe(false);
  expect(isValidFdName('')).toBe(false);
  expect(isValidFdName('a:b')).toBe(false);
  expect(isValidFdName('a\nFDSTOREREMOVE=1')).toBe(false);
  expect(isValidFdName('é')).toBe(false);
});

test('ownUnit reads the service from the cgroup', () => {
  expect(ownUnit('0::/system.slice/relayfork.service\n')).toBe('relayfork.service');
  expect(ownUnit('0::/system.slice/relayfork@x.service\n')).toBe('relayfork@x.service');
  expect(ownUnit('0::/user.slice/user-0.slice/session-3.scope\n')).toBeUndefined();
  expect(ownUnit('0::/\n')).toBeUndefined();
  expect(ownUnit('4:memory:/process_api/6f65\n1:name=systemd:/system.slice/a.service\n')).toBe(
    'a.service',
  );
});

test('hasRestartJob finds a restart or try-restart job of the unit only', () => {
  const listing = (type: string, unit = 'relayfork.service'): string =>
    `412 ${unit} ${type} running\n413 other.service start waiting\n`;
  expect(hasRestartJob(listing('restart'), 'relayfork.service')).toBe(true);
  expect(hasRestartJob(listing('try-restart'), 'relayfork.service')).toBe(true);
  expect(hasRestartJob(listing('stop'), 'relayfork.service')).toBe(false);
  expect(hasRestartJob(listing('start'), 'relayfork.service')).toBe(false);
  expect(hasRestartJob(listing('restart', 'other.service'), 'relayfork.service')).toBe(false);
  expect(hasRestartJob('', 'relayfork.service')).toBe(false);
});

describe('restartPending asks systemctl list-jobs', () => {
  let dir: TempDir;
  beforeEach(() => {
    dir = new TempDir();
  });
  afterEach(() => dir.cleanup());

  /** A stand-in systemctl: a shell script with this body. */
  function systemctl(body: string): string {
    const file = dir.join('systemctl');
    fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return file;
  }

  test('a restart job of the unit means restarting; none means stopping, and says so', async () => {
    const restarting = systemctl('echo "412 relayfork.service restart running"');
    expect(await restartPending('relayfork.service', restarting)).toEqual({ restarting: true });
    const stopping = systemctl('echo "412 relayfork.service stop running"');
    expect(await restartPending('relayfork.service', stopping)).toEqual({
      restarting: false,
      why: 'systemd has no restart job queued for relayfork.service',
    });
  });

  test('a call that fails once is asked again', async () => {
    const calls = dir.join('calls');
    const flaky = systemctl(
      `echo x >> ${calls}; [ $(wc -l < ${calls}) -ge 2 ] || { echo "Failed to list jobs: Connection timed out" >&2; exit 1; }\necho "7 relayfork.service restart running"`,
    );
    expect(await restartPending('relayfork.service', flaky)).toEqual({ restarting: true });
    expect(fs.readFileSync(calls, 'utf8')).toBe('x\nx\n');
  });

  test('when systemctl keeps failing, the answer is a stop that names the failure', async () => {
    const failing = systemctl(
      'echo "Failed to connect to bus: No such file or directory" >&2; exit 1',
    );
    const answer = await restartPending('relayfork.service', failing);
    expect(answer.restarting).toBe(false);
    expect(answer).toMatchObject({
      why: expect.stringMatching(/list-jobs failed 2 times, last: .*Failed to connect to bus/),
    });
    const missing = await restartPending('relayfork.service', dir.join('no-such-systemctl'));
    expect(missing).toMatchObject({ restarting: false, why: expect.stringMatching(/ENOENT/) });
  });
});

describe('takeListenFds', () => {
  test('fds meant for another process are not taken, and the variables are removed', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '1', LISTEN_FDS: '1', LISTEN_FDNAMES: 'fuse' };
    expect(takeListenFds(env, 4242)).toEqual({ fds: [] });
    expect(env).toEqual({});
  });

  test('nothing passed, or a malformed count', () => {
    expect(takeListenFds({}, 4242)).toEqual({ fds: [] });
    expect(takeListenFds({ LISTEN_PID: '4242', LISTEN_FDS: '0' }, 4242)).toEqual({ fds: [] });
    expect(takeListenFds({ LISTEN_PID: '4242', LISTEN_FDS: 'x' }, 4242).problem).toMatch(
      /LISTEN_FDS=x is not a number/,
    );
  });
});
