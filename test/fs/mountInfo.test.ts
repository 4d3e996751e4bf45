/** /proc/self/mountinfo parsing, on captured lines and on this machine's own table. */
import { parseMountInfo, readMountInfo, topMountAt } from '../../src/fs/mountInfo';

// Captured from Linux 6.18 (the second line is the example of Documentation/filesystems/proc.rst),
// plus a stacked pair on a path with a space.
const CAPTURED = [
  '22 28 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw',
  '36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue',
  '512 28 0:62 / /run/relay\\040fork rw,nosuid,nodev,relatime shared:301 - fuse.relayfork relayfork rw,user_id=0,group_id=0,default_permissions,allow_other',
  '530 512 0:70 / /run/relay\\040fork rw,relatime - tmpfs tmpfs rw,size=1024k',
  '',
].join('\n');

test('fields are read around the optional fields and octal escapes are decoded', () => {
  const entries = parseMountInfo(CAPTURED);
  expect(entries).toHaveLength(4);
  expect(entries[1]).toEqual({
    mountId: 36,
    parentId: 35,
    device: '98:0',
    root: '/mnt1',
    mountPoint: '/mnt2',
    fsType: 'ext3',
    source: '/dev/root',
  });
  expect(entries[2]).toMatchObject({
    mountPoint: '/run/relay fork',
    fsType: 'fuse.relayfork',
    source: 'relayfork',
    device: '0:62',
  });
  // No optional fields at all: the separator is the 7th field.
  expect(entries[3]).toMatchObject({ mountId: 530, fsType: 'tmpfs' });
});

test('topMountAt finds the mount stacked last on a directory, and nothing elsewhere', () => {
  const entries = parseMountInfo(CAPTURED);
  expect(topMountAt(entries, '/run/relay fork')?.mountId).toBe(530);
  expect(topMountAt(entries.slice(0, 3), '/run/relay fork')?.mountId).toBe(512);
  expect(topMountAt(entries, '/run')).toBeUndefined();
});

test("this machine's table has / and /proc", async () => {
  const entries = await readMountInfo();
  expect(topMountAt(entries, '/')).toBeDefined();
  expect(topMountAt(entries, '/proc')?.fsType).toBe('proc');
});
