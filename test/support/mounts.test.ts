/**
 * The temp-dir cleanup with mounts left in it (root): whatever a failed test left mounted below a
 * TempDir, stacked or nested, is detached (found through /proc/self/mountinfo) before the
 * directory is removed, never recursed into while mounted.
 */
import fs from 'node:fs';
import { TempDir, cleanupAll, execFileAsync, isMounted, mountPointsBelow, mountTypeAt } from '.';

afterAll(cleanupAll);

test('cleanup detaches nested and stacked mounts, then removes the dir', async () => {
  const tmp = new TempDir('relayfork-support-');
  const outer = tmp.join('outer');
  fs.mkdirSync(outer);
  await execFileAsync('mount', ['-t', 'tmpfs', 'tmpfs', outer]);
  const inner = tmp.join('outer', 'inner');
  fs.mkdirSync(inner);
  await execFileAsync('mount', ['-t', 'tmpfs', 'tmpfs', inner]);
  await execFileAsync('mount', ['-t', 'tmpfs', 'tmpfs', inner]); // stacked on the first
  fs.writeFileSync(tmp.join('outer', 'inner', 'file'), 'x');

  expect(isMounted(outer)).toBe(true);
  expect(mountTypeAt(inner)).toBe('tmpfs');
  expect(await mountPointsBelow(tmp.path)).toEqual([inner, inner, outer]);

  await tmp.cleanup();
  expect(await mountPointsBelow(tmp.path)).toEqual([]);
  expect(fs.existsSync(tmp.path)).toBe(false);
});
