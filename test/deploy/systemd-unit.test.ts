/**
 * systemd/relayfork.service and `installService`, checked by systemd's own parser
 * (`systemd-analyze verify`, package systemd), which also checks that ExecStart's executable
 * exists: so a unit written for this checkout must name a real node and a real dist/cli.js.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  UNIT_TEMPLATE_PATH,
  installService,
  execCommandLine,
} from '../../src/systemd/installService';
import { CLI, TempDir, cleanupAll, execFileAsync, requireBuild } from '../support';

let tmp: string;

beforeAll(() => {
  requireBuild();
  tmp = new TempDir('relayfork-unit-').path;
});

afterAll(cleanupAll);

/** systemd-analyze verify; resolves to its output (empty when the unit is clean). */
async function verify(unitPath: string): Promise<string> {
  try {
    const { stdout, stderr } = await execFileAsync('systemd-analyze', ['verify', unitPath]);
    return stdout + stderr;
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string; code?: unknown };
    if (e.code === 'ENOENT') {
      throw new Error('systemd-analyze is missing: apt-get install systemd (it ships it)', {
        cause: err,
      });
    }
    throw new Error(`systemd-analyze verify ${unitPath} failed:\n${e.stdout}${e.stderr}`, {
      cause: err,
    });
  }
}

function unitLines(text: string): string[] {
  return text.split('\n');
}

test('install-service writes the shipped unit with ExecStart = this node + this dist/cli.js', async () => {
  const unitDir = path.join(tmp, 'etc', 'systemd', 'system');
  const written = await installService({ unitDir });
  expect(written).toBe(path.join(unitDir, 'relayfork.service'));
  expect(fs.statSync(written).mode & 0o777).toBe(0o644);

  const unit = fs.readFileSync(written, 'utf8');
  const template = fs.readFileSync(UNIT_TEMPLATE_PATH, 'utf8');
  // Only the ExecStart= line differs from the shipped unit.
  const changed = unitLines(unit).filter((line, i) => line !== unitLines(template)[i]);
  expect(changed).toEqual([`ExecStart=${process.execPath} ${CLI} --signal 40 --fd-store`]);
  expect(unitLines(unit)).toHaveLength(unitLines(template).length);

  expect(await verify(written)).toBe('');
});

test('the unit is Type=notify with the watchdog, restart policy and capabilities it documents', () => {
  const unit = fs.readFileSync(UNIT_TEMPLATE_PATH, 'utf8');
  const settings = new Map<string, string>();
  for (const line of unitLines(unit)) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) settings.set(m[1], m[2]);
  }
  expect(settings.get('Type')).toBe('notify');
  expect(settings.get('NotifyAccess')).toBe('main');
  expect(settings.get('Restart')).toBe('on-failure');
  expect(settings.get('WatchdogSec')).toBe('30s');
  expect(settings.get('ExecStart')).toBe('relayfork --signal 40 --fd-store');
  // --fd-store needs a store of at least one fd.
  expect(settings.get('FileDescriptorStoreMax')).toBe('1');
  expect(settings.get('CapabilityBoundingSet')?.split(' ').sort()).toEqual([
    'CAP_KILL',
    'CAP_NET_ADMIN',
    'CAP_SYS_ADMIN',
    'CAP_SYS_NICE',
  ]);
  expect(settings.get('DeviceAllow')).toBe('/dev/fuse rw');
  // Any of these would give the service a mount namespace of its own, from which the FUSE
  // mount never reaches the rest of the system (see the comment in the unit).
  for (const name of [
    'ProtectSystem',
    'ProtectHome',
    'PrivateTmp',
    'PrivateDevices',
    'PrivateMounts',
    'ProtectKernelTunables',
    'ProtectKernelModules',
    'ProtectKernelLogs',
    'ProtectControlGroups',
    'ProtectProc',
    'ReadWritePaths',
    'ReadOnlyPaths',
    'InaccessiblePaths',
    'TemporaryFileSystem',
    'BindPaths',
    'MountFlags',
    'PrivateNetwork',
    'PrivateUsers',
    'MemoryDenyWriteExecute',
  ]) {
    expect(settings.has(name)).toBe(false);
  }
});

test('--signal and a custom command line are written so that systemd parses them back', async () => {
  // A node reached through a directory with a space, '%' and '$' in its name: systemd reads the
  // quoted, escaped path back to the real file, or verify reports the command as missing.
  const oddDir = path.join(tmp, 'odd dir %i $HOME');
  fs.mkdirSync(oddDir);
  const node = path.join(oddDir, 'node');
  fs.symlinkSync(process.execPath, node);
  const unitDir = path.join(tmp, 'custom');
  const written = await installService({
    unitDir,
    signal: 45,
    execStart: execCommandLine([node, CLI, '--log-level', 'info']),
  });
  const execStart = unitLines(fs.readFileSync(written, 'utf8')).find((l) =>
    l.startsWith('ExecStart='),
  );
  // '$' stays single in the executable's path: systemd substitutes variables only in arguments.
  expect(execStart).toBe(
    `ExecStart="${oddDir.replace(/%/g, '%%')}/node" ${CLI} --log-level info --signal 45 --fd-store`,
  );
  expect(await verify(written)).toBe('');
});

test('install-service refuses signals outside 34..63', async () => {
  for (const signal of [32, 33, 64, 40.5]) {
    await expect(installService({ unitDir: tmp, signal })).rejects.toThrow(/choose 34\.\.63/);
  }
  expect(fs.existsSync(path.join(tmp, 'relayfork.service'))).toBe(false);
});
