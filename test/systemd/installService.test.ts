/**
 * `relayfork install-service --unit-dir DIR`: the advice it prints depends on whether systemd
 * reads DIR. Only the CLI into a temporary directory runs here; writing into a directory systemd
 * reads would install the unit on this machine (test/deploy does that inside systemd-nspawn).
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  installServiceMessage,
  systemdReadsUnitDir,
  UNIT_NAME,
} from '../../src/systemd/installService';
import { CLI, TempDir, cleanupAll, execFileAsync } from '../support';

let tmp: string;
beforeAll(() => {
  tmp = new TempDir('relayfork-unitdir-').path;
});
afterAll(cleanupAll);

test('the directories systemd reads are recognised, however they are spelt', async () => {
  for (const dir of [
    '/etc/systemd/system',
    '/etc/systemd/system/',
    '/run/systemd/system',
    '/usr/lib/systemd/system',
    '/lib/systemd/system',
    '/usr/local/lib/systemd/system',
    '/etc/systemd/../systemd/system',
  ]) {
    expect([dir, await systemdReadsUnitDir(dir)]).toEqual([dir, true]);
  }
  const link = path.join(tmp, 'link-to-etc');
  fs.symlinkSync('/etc/systemd/system', link);
  expect(await systemdReadsUnitDir(link)).toBe(true);
});

test('other directories are not', async () => {
  for (const dir of [tmp, '/etc/systemd', '/etc/systemd/user', '/tmp', path.join(tmp, 'absent')]) {
    expect([dir, await systemdReadsUnitDir(dir)]).toEqual([dir, false]);
  }
});

test('the message says to reload systemd only where systemd reads the unit', () => {
  expect(installServiceMessage('/etc/systemd/system/relayfork.service', true)).toBe(
    'wrote /etc/systemd/system/relayfork.service\n' +
      'now run: systemctl daemon-reload && systemctl enable --now relayfork\n',
  );
  const elsewhere = installServiceMessage('/srv/units/relayfork.service', false);
  expect(elsewhere).toMatch(/^wrote \/srv\/units\/relayfork.service\n/);
  expect(elsewhere).toContain('systemd does not read /srv/units');
  expect(elsewhere).not.toMatch(/^now run/m);
});

test('relayfork install-service --unit-dir DIR writes the unit and says systemd does not read DIR', async () => {
  const dir = path.join(tmp, 'units');
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const { stdout } = await execFileAsync(process.execPath, [
    CLI,
    'install-service',
    '--unit-dir',
    dir,
  ]);
  const unit = path.join(dir, UNIT_NAME);
  expect(fs.readFileSync(unit, 'utf8')).toMatch(/^ExecStart=.* --signal 40 --fd-store$/m);
  expect(stdout).toBe(installServiceMessage(unit, false));
});
