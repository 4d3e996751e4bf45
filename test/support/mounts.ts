/**
 * What is mounted where, from the kernel's table (src/fs/mountInfo.ts): never by touching a mount,
 * which fails ENOTCONN when stale and never returns when its server hangs. Synchronous reads of
 * /proc/self/mountinfo are safe even on a mount this process serves (they do not reach FUSE).
 */
import fs from 'node:fs';
import { MOUNTINFO_PATH, parseMountInfo, readMountInfo, topMountAt } from '../../src/fs/mountInfo';
import { MNT_DETACH, umount2 } from '../../src/native/libc';

function isAtOrBelow(mountPoint: string, dir: string): boolean {
  return mountPoint === dir || mountPoint.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

export function isMounted(mountPoint: string): boolean {
  return parseMountInfo(fs.readFileSync(MOUNTINFO_PATH, 'utf8')).some(
    (e) => e.mountPoint === mountPoint,
  );
}

/** The mount points at or below `dir`, deepest first (each listed as often as it is stacked). */
export async function mountPointsBelow(dir: string): Promise<string[]> {
  return (await readMountInfo())
    .map((e) => e.mountPoint)
    .filter((p) => isAtOrBelow(p, dir))
    .sort((a, b) => b.length - a.length);
}

/**
 * The last resort, once whoever mounted had its chance to unmount: detach every mount at or below
 * `dir` (umount -l, i.e. umount2 MNT_DETACH: it never blocks on a hung server), deepest first,
 * until none is left. Throws if some mount will not go.
 */
export async function detachMountsBelow(dir: string): Promise<void> {
  for (let round = 0; round < 16; round++) {
    const below = await mountPointsBelow(dir);
    if (below.length === 0) return;
    for (const mountPoint of below) {
      try {
        umount2(mountPoint, MNT_DETACH);
      } catch {
        // Gone already (a parent's detach took it along); the next round checks.
      }
    }
  }
  const left = await mountPointsBelow(dir);
  if (left.length > 0) throw new Error(`could not detach ${left.join(', ')}`);
}

/** The filesystem type of the mount a lookup of `mountPoint` lands on, if any is there. */
export function mountTypeAt(mountPoint: string): string | undefined {
  return topMountAt(parseMountInfo(fs.readFileSync(MOUNTINFO_PATH, 'utf8')), mountPoint)?.fsType;
}
