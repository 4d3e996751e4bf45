/**
 * /proc/self/mountinfo, read without touching the mounts themselves: stat-ing a stale FUSE mount
 * fails ENOTCONN and stat-ing one whose server hangs never returns, so "what is mounted where"
 * comes from the kernel's table (Documentation/filesystems/proc.rst, "3.5 /proc/<pid>/mountinfo").
 */
import { readFile } from 'node:fs/promises';

export const MOUNTINFO_PATH = '/proc/self/mountinfo';

/** One line: `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`. */
export interface MountInfoEntry {
  mountId: number;
  parentId: number;
  /** st_dev of the mount's files as "major:minor". */
  device: string;
  /** The mount's root within its filesystem. */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Octal escapes the kernel uses for space, tab, newline and backslash (fs/proc_namespace.c). */
function unescapeOctal(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) =>
    String.fromCharCode(parseInt(octal, 8)),
  );
}

export function parseMountInfo(text: string): MountInfoEntry[] {
  const entries: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const fields = line.split(' ');
    // Optional fields end at a lone '-'; fstype and source follow it.
    const separator = fields.indexOf('-', 6);
    if (fields.length < 10 || separator < 0 || separator + 2 >= fields.length) continue;
    entries.push({
      mountId: Number(fields[0]),
      parentId: Number(fields[1]),
      device: fields[2],
      root: unescapeOctal(fields[3]),
      mountPoint: unescapeOctal(fields[4]),
      fsType: fields[separator + 1],
      source: unescapeOctal(fields[separator + 2]),
    });
  }
  return entries;
}

export async function readMountInfo(): Promise<MountInfoEntry[]> {
  return parseMountInfo(await readFile(MOUNTINFO_PATH, 'utf8'));
}

/**
 * The mount a path lookup of `mountPoint` lands on: when mounts are stacked on one directory, the
 * one no other mount at the same place is stacked on.
 */
export function topMountAt(
  entries: readonly MountInfoEntry[],
  mountPoint: string,
): MountInfoEntry | undefined {
  const here = entries.filter((e) => e.mountPoint === mountPoint);
  return here.find((e) => !here.some((other) => other.parentId === e.mountId)) ?? here.at(-1);
}
