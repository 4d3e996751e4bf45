/**
 * Handing a live FUSE connection from one server process to the next (through systemd's fd
 * store, or any fd passing): the /dev/fuse fd plus a name that says what the fd serves, so the
 * successor can check, before it answers a single request, that it may take the connection over.
 *
 * The name: `fuse.<major>.<minor>.<dev major>.<dev minor>.<tree>`
 * - major.minor: the FUSE protocol FUSE_INIT settled. The successor gets no FUSE_INIT (the kernel
 *   sends it once per connection) and must encode replies for that minor;
 * - dev: the mount's device ("0:55" in /proc/self/mountinfo; also the name of its directory in
 *   /sys/fs/fuse/connections), which tells which mount the connection serves;
 * - tree: a hash of the file names and modes. Node ids are given in file order: a successor with
 *   other files would answer the kernel's cached node ids with the wrong files.
 * It is a valid systemd FDNAME (printable ASCII, no ':', at most 255 bytes).
 */
import { writeFileSync } from 'node:fs';

export interface FuseHandover {
  /** The /dev/fuse fd of the connection. */
  fd: number;
  /** What it serves, from handoverName(). */
  name: string;
}

export interface HandoverDescription {
  protocolMajor: number;
  protocolMinor: number;
  /** "major:minor", as in mountinfo. */
  device: string;
  /** treeSignature() of the tree served. */
  tree: string;
}

const NAME_PATTERN = /^fuse\.(\d{1,3})\.(\d{1,3})\.(\d{1,10})\.(\d{1,10})\.([0-9a-f]{8})$/;

export function handoverName(d: HandoverDescription): string {
  const [devMajor, devMinor] = d.device.split(':');
  return `fuse.${d.protocolMajor}.${d.protocolMinor}.${devMajor}.${devMinor}.${d.tree}`;
}

/** The description in a handover name, or undefined when it is not one. */
export function parseHandoverName(name: string): HandoverDescription | undefined {
  const m = NAME_PATTERN.exec(name);
  if (m === null) return undefined;
  return {
    protocolMajor: Number(m[1]),
    protocolMinor: Number(m[2]),
    device: `${m[3]}:${m[4]}`,
    tree: m[5],
  };
}

/** FNV-1a (32 bits) of the file system name and each file's name and mode, in node-id order. */
export function treeSignature(
  fsName: string,
  files: Array<{ name: string; mode: number }>,
): string {
  let hash = 0x811c9dc5;
  const text = [fsName, ...files.map((f) => `${f.name}=${f.mode.toString(8)}`)].join('\n');
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

/** The fusectl directory of connections (fs/fuse/control.c), mounted by systemd at boot. */
export const FUSE_CONNECTIONS_DIR = '/sys/fs/fuse/connections';

/**
 * Abort the connection of the mount with `device` ("0:55"): every waiting and future request
 * fails ENOTCONN at once, so the mount becomes stale and can be cleared, even while another
 * process (systemd's fd store) still holds the connection open. Returns false when fusectl is
 * not mounted or the connection is already gone.
 */
export function abortConnection(device: string): boolean {
  const [major, minor] = device.split(':').map(Number);
  // fusectl names each connection by its dev_t (MKDEV(major, minor) = major << 20 | minor).
  const id = major * 2 ** 20 + minor;
  try {
    writeFileSync(`${FUSE_CONNECTIONS_DIR}/${id}/abort`, '1');
    return true;
  } catch {
    return false;
  }
}
