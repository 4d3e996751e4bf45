/**
 * The FUSE kernel protocol's wire format: named offsets and sizes of the structs relayfork reads
 * and writes on /dev/fuse, the opcodes and flags it uses, and pure parsers/encoders (no I/O).
 *
 * Source: include/uapi/linux/fuse.h, protocol 7.43 (Linux 6.14), checked against fs/fuse/*.c of
 * Linux 6.18. Debian 12's header is 7.38 and lacks FUSE_REQUEST_TIMEOUT, so everything is defined
 * here. All fields are native-endian; relayfork runs on little-endian hosts (x86_64, aarch64).
 * Every struct is padded to 8 bytes by the header itself ("so 32bit userspace works under 64bit
 * kernels").
 */

/** The major version we speak (FUSE_KERNEL_VERSION). */
export const FUSE_KERNEL_VERSION = 7;
/**
 * The newest minor whose structs this file encodes (FUSE_KERNEL_MINOR_VERSION of fuse.h 7.43:
 * FUSE_REQUEST_TIMEOUT). Both sides use the smaller of the two minors (fuse.h, "Version
 * negotiation").
 */
export const FUSE_KERNEL_MINOR_VERSION = 43;
/**
 * The oldest kernel minor we accept: 7.36 (Linux 5.17) extended fuse_init_in to 64 bytes with
 * flags2 (FUSE_INIT_EXT). Linux 6.1, the oldest kernel relayfork supports, speaks 7.37.
 */
export const FUSE_MIN_KERNEL_MINOR = 36;
/** FUSE_ROOT_ID: the node id of the root directory. */
export const FUSE_ROOT_ID = 1;

/** enum fuse_opcode (the ones relayfork names; any other is answered ENOSYS). */
export const Opcode = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
  RENAME2: 45,
  TMPFILE: 51,
} as const;

/** struct fuse_in_header: precedes every request read from /dev/fuse. */
export const IN_HEADER = {
  SIZE: 40,
  /** uint32_t len: the whole request, header included. */
  LEN: 0,
  /** uint32_t opcode */
  OPCODE: 4,
  /** uint64_t unique: echoed in the reply; the low bit (FUSE_INT_REQ_BIT) marks an interrupt. */
  UNIQUE: 8,
  /** uint64_t nodeid */
  NODEID: 16,
  /** uint32_t uid, gid: the caller's fsuid/fsgid in the mount's user namespace. */
  UID: 24,
  GID: 28,
  /**
   * uint32_t pid: the calling *thread's* id in the mount's pid namespace (fs/fuse/dev.c
   * fuse_force_creds: pid_nr_ns(task_pid(current), ...)), 0 for requests the kernel makes on its
   * own behalf (e.g. a RELEASE sent after the last close).
   */
  PID: 32,
  /** uint16_t total_extlen (7.38): length of extension headers, in 8-byte units. */
  TOTAL_EXTLEN: 36,
} as const;

/** struct fuse_out_header: precedes every reply written to /dev/fuse. */
export const OUT_HEADER = {
  SIZE: 16,
  /** uint32_t len: the whole reply, header included. */
  LEN: 0,
  /** int32_t error: 0 or a negative errno; an error reply has no body. */
  ERROR: 4,
  /** uint64_t unique: the request's. */
  UNIQUE: 8,
} as const;

/** struct fuse_init_in (64 bytes since 7.36; 16 bytes before). */
export const INIT_IN = {
  SIZE: 64,
  MAJOR: 0,
  MINOR: 4,
  MAX_READAHEAD: 8,
  FLAGS: 12,
  /** uint32_t flags2 (7.36): bits 32..63 of the flags, valid when FLAGS has FUSE_INIT_EXT. */
  FLAGS2: 16,
} as const;

/** struct fuse_init_out (64 bytes since 7.23). */
export const INIT_OUT = {
  SIZE: 64,
  MAJOR: 0,
  MINOR: 4,
  MAX_READAHEAD: 8,
  FLAGS: 12,
  /** uint16_t max_background, congestion_threshold: 0 keeps the kernel's defaults. */
  MAX_BACKGROUND: 16,
  CONGESTION_THRESHOLD: 18,
  /** uint32_t max_write: the largest WRITE payload (the kernel raises anything below 4096). */
  MAX_WRITE: 20,
  /** uint32_t time_gran: timestamp granularity in ns; 0 keeps the default (1 ns). */
  TIME_GRAN: 24,
  MAX_PAGES: 28,
  MAP_ALIGNMENT: 30,
  FLAGS2: 32,
  MAX_STACK_DEPTH: 36,
  /** uint16_t request_timeout (7.43): seconds, with FUSE_REQUEST_TIMEOUT in the flags. */
  REQUEST_TIMEOUT: 40,
} as const;

/** INIT flags (fuse_init_in/out.flags, and flags2 as bits 32..63). */
export const InitFlag = {
  FUSE_BIG_WRITES: 1n << 5n,
  FUSE_INIT_EXT: 1n << 30n,
  /** 7.43: the kernel can abort the connection when a request is not answered in time. */
  FUSE_REQUEST_TIMEOUT: 1n << 42n,
} as const;

/** struct fuse_attr (88 bytes). */
export const ATTR = {
  SIZE: 88,
  INO: 0,
  SIZE_: 8,
  BLOCKS: 16,
  ATIME: 24,
  MTIME: 32,
  CTIME: 40,
  ATIMENSEC: 48,
  MTIMENSEC: 52,
  CTIMENSEC: 56,
  MODE: 60,
  NLINK: 64,
  UID: 68,
  GID: 72,
  RDEV: 76,
  BLKSIZE: 80,
  FLAGS: 84,
} as const;

/** struct fuse_entry_out: the LOOKUP reply (a node id and its attributes, with validities). */
export const ENTRY_OUT = {
  SIZE: 40 + ATTR.SIZE,
  NODEID: 0,
  GENERATION: 8,
  ENTRY_VALID: 16,
  ATTR_VALID: 24,
  ENTRY_VALID_NSEC: 32,
  ATTR_VALID_NSEC: 36,
  ATTR: 40,
} as const;

/** struct fuse_attr_out: the GETATTR and SETATTR reply. */
export const ATTR_OUT = {
  SIZE: 16 + ATTR.SIZE,
  ATTR_VALID: 0,
  ATTR_VALID_NSEC: 8,
  ATTR: 16,
} as const;

/** struct fuse_setattr_in (88 bytes): which attributes to change (FATTR_* in VALID). */
export const SETATTR_IN = {
  SIZE: 88,
  VALID: 0,
  FH: 8,
  SIZE_: 16,
  MODE: 68,
  UID: 76,
  GID: 80,
} as const;

/** fuse_setattr_in.valid bits. */
export const Fattr = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
} as const;

/** struct fuse_open_in (OPEN, OPENDIR). */
export const OPEN_IN = { SIZE: 8, FLAGS: 0 } as const;
/** struct fuse_open_out. */
export const OPEN_OUT = { SIZE: 16, FH: 0, OPEN_FLAGS: 8 } as const;
/** FOPEN_DIRECT_IO (7.2): bypass the page cache: every read(2)/write(2) becomes a request. */
export const FOPEN_DIRECT_IO = 1 << 0;

/** struct fuse_read_in (READ, READDIR; 40 bytes since 7.9). */
export const READ_IN = { SIZE: 40, FH: 0, OFFSET: 8, SIZE_: 16 } as const;
/** struct fuse_write_in (40 bytes since 7.9), followed by the written bytes. */
export const WRITE_IN = { SIZE: 40, FH: 0, OFFSET: 8, SIZE_: 16 } as const;
/** struct fuse_write_out. */
export const WRITE_OUT = { SIZE: 8, SIZE_: 0 } as const;
/** struct fuse_release_in (RELEASE, RELEASEDIR). */
export const RELEASE_IN = { SIZE: 24, FH: 0 } as const;
/** struct fuse_interrupt_in. */
export const INTERRUPT_IN = { SIZE: 8, UNIQUE: 0 } as const;
/** struct fuse_batch_forget_in, followed by `count` struct fuse_forget_one (16 bytes each). */
export const BATCH_FORGET_IN = { SIZE: 8, COUNT: 0, FORGET_ONE_SIZE: 16 } as const;
/** struct fuse_kstatfs (the whole STATFS reply, fuse_statfs_out). */
export const KSTATFS = {
  SIZE: 80,
  BLOCKS: 0,
  BFREE: 8,
  BAVAIL: 16,
  FILES: 24,
  FFREE: 32,
  BSIZE: 40,
  NAMELEN: 44,
  FRSIZE: 48,
} as const;
/** struct fuse_dirent: one READDIR entry; the name follows and the entry is padded to 8. */
export const DIRENT = { NAME_OFFSET: 24, INO: 0, OFF: 8, NAMELEN: 16, TYPE: 20 } as const;
/** d_type values (DT_DIR, DT_REG) as fuse_dirent.type carries them (mode >> 12). */
export const DT_DIR = 4;
export const DT_REG = 8;

/**
 * The smallest read(2) buffer /dev/fuse accepts (fs/fuse/dev.c fuse_dev_do_read: at least
 * FUSE_MIN_READ_BUFFER and at least a WRITE request of max_write bytes, else EINVAL).
 */
export const FUSE_MIN_READ_BUFFER = 8192;

// ---------------------------------------------------------------------------------------------
// Parsing

export interface RequestHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

/** The header of a request, or undefined when `buf` is too short or its length is inconsistent. */
export function parseRequestHeader(buf: Buffer): RequestHeader | undefined {
  if (buf.length < IN_HEADER.SIZE) return undefined;
  const len = buf.readUInt32LE(IN_HEADER.LEN);
  if (len < IN_HEADER.SIZE || len > buf.length) return undefined;
  return {
    len,
    opcode: buf.readUInt32LE(IN_HEADER.OPCODE),
    unique: buf.readBigUInt64LE(IN_HEADER.UNIQUE),
    nodeid: buf.readBigUInt64LE(IN_HEADER.NODEID),
    uid: buf.readUInt32LE(IN_HEADER.UID),
    gid: buf.readUInt32LE(IN_HEADER.GID),
    pid: buf.readUInt32LE(IN_HEADER.PID),
  };
}

export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  /** flags | flags2 << 32 (flags2 only when the kernel set FUSE_INIT_EXT). */
  flags: bigint;
}

/** fuse_init_in from a request body (16 bytes before 7.36, 64 after). */
export function parseInitIn(body: Buffer): InitIn | undefined {
  if (body.length < 8) return undefined;
  const major = body.readUInt32LE(INIT_IN.MAJOR);
  const minor = body.readUInt32LE(INIT_IN.MINOR);
  if (body.length < 16) return { major, minor, maxReadahead: 0, flags: 0n };
  let flags = BigInt(body.readUInt32LE(INIT_IN.FLAGS));
  if ((flags & InitFlag.FUSE_INIT_EXT) !== 0n && body.length >= INIT_IN.FLAGS2 + 4) {
    flags |= BigInt(body.readUInt32LE(INIT_IN.FLAGS2)) << 32n;
  }
  return { major, minor, maxReadahead: body.readUInt32LE(INIT_IN.MAX_READAHEAD), flags };
}

export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: bigint;
  maxWrite: number;
  /** Seconds; sent only with FUSE_REQUEST_TIMEOUT in flags. */
  requestTimeout: number;
}

/** fuse_init_out (64 bytes); bits 32..63 of `flags` go to flags2 (with FUSE_INIT_EXT set). */
export function encodeInitOut(init: InitOut): Buffer {
  const out = Buffer.alloc(INIT_OUT.SIZE);
  let flags = init.flags;
  if (flags >> 32n !== 0n) flags |= InitFlag.FUSE_INIT_EXT;
  out.writeUInt32LE(init.major, INIT_OUT.MAJOR);
  out.writeUInt32LE(init.minor, INIT_OUT.MINOR);
  out.writeUInt32LE(init.maxReadahead, INIT_OUT.MAX_READAHEAD);
  out.writeUInt32LE(Number(flags & 0xffffffffn), INIT_OUT.FLAGS);
  out.writeUInt32LE(init.maxWrite, INIT_OUT.MAX_WRITE);
  out.writeUInt32LE(Number(flags >> 32n), INIT_OUT.FLAGS2);
  out.writeUInt16LE(init.requestTimeout, INIT_OUT.REQUEST_TIMEOUT);
  return out;
}

/** fuse_init_out as the kernel would read it (tests). */
export function parseInitOut(out: Buffer): InitOut {
  let flags = BigInt(out.readUInt32LE(INIT_OUT.FLAGS));
  if ((flags & InitFlag.FUSE_INIT_EXT) !== 0n) {
    flags |= BigInt(out.readUInt32LE(INIT_OUT.FLAGS2)) << 32n;
  }
  return {
    major: out.readUInt32LE(INIT_OUT.MAJOR),
    minor: out.readUInt32LE(INIT_OUT.MINOR),
    maxReadahead: out.readUInt32LE(INIT_OUT.MAX_READAHEAD),
    flags,
    maxWrite: out.readUInt32LE(INIT_OUT.MAX_WRITE),
    requestTimeout: out.readUInt16LE(INIT_OUT.REQUEST_TIMEOUT),
  };
}

/** A file's attributes as relayfork serves them (a subset of struct fuse_attr). */
export interface Attr {
  ino: number;
  size: number;
  /** S_IFDIR/S_IFREG | permission bits. */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch, for atime, mtime and ctime alike. */
  timeSec: number;
}

function writeAttr(out: Buffer, at: number, attr: Attr): void {
  out.writeBigUInt64LE(BigInt(attr.ino), at + ATTR.INO);
  out.writeBigUInt64LE(BigInt(attr.size), at + ATTR.SIZE_);
  const t = BigInt(attr.timeSec);
  out.writeBigUInt64LE(t, at + ATTR.ATIME);
  out.writeBigUInt64LE(t, at + ATTR.MTIME);
  out.writeBigUInt64LE(t, at + ATTR.CTIME);
  out.writeUInt32LE(attr.mode, at + ATTR.MODE);
  out.writeUInt32LE(attr.nlink, at + ATTR.NLINK);
  out.writeUInt32LE(attr.uid, at + ATTR.UID);
  out.writeUInt32LE(attr.gid, at + ATTR.GID);
  out.writeUInt32LE(4096, at + ATTR.BLKSIZE);
}

/** Split a validity in seconds into the (seconds, nanoseconds) pair the structs carry. */
function validity(seconds: number): [bigint, number] {
  const whole = Math.floor(seconds);
  return [BigInt(whole), Math.round((seconds - whole) * 1e9)];
}

export function encodeEntryOut(nodeid: number, attr: Attr, validSeconds: number): Buffer {
  const out = Buffer.alloc(ENTRY_OUT.SIZE);
  const [sec, nsec] = validity(validSeconds);
  out.writeBigUInt64LE(BigInt(nodeid), ENTRY_OUT.NODEID);
  out.writeBigUInt64LE(sec, ENTRY_OUT.ENTRY_VALID);
  out.writeBigUInt64LE(sec, ENTRY_OUT.ATTR_VALID);
  out.writeUInt32LE(nsec, ENTRY_OUT.ENTRY_VALID_NSEC);
  out.writeUInt32LE(nsec, ENTRY_OUT.ATTR_VALID_NSEC);
  writeAttr(out, ENTRY_OUT.ATTR, attr);
  return out;
}

export function encodeAttrOut(attr: Attr, validSeconds: number): Buffer {
  const out = Buffer.alloc(ATTR_OUT.SIZE);
  const [sec, nsec] = validity(validSeconds);
  out.writeBigUInt64LE(sec, ATTR_OUT.ATTR_VALID);
  out.writeUInt32LE(nsec, ATTR_OUT.ATTR_VALID_NSEC);
  writeAttr(out, ATTR_OUT.ATTR, attr);
  return out;
}

export function encodeOpenOut(fh: number, openFlags: number): Buffer {
  const out = Buffer.alloc(OPEN_OUT.SIZE);
  out.writeBigUInt64LE(BigInt(fh), OPEN_OUT.FH);
  out.writeUInt32LE(openFlags, OPEN_OUT.OPEN_FLAGS);
  return out;
}

export function encodeWriteOut(size: number): Buffer {
  const out = Buffer.alloc(WRITE_OUT.SIZE);
  out.writeUInt32LE(size, WRITE_OUT.SIZE_);
  return out;
}

export interface Statfs {
  bsize: number;
  namelen: number;
}

/** fuse_kstatfs with no blocks and no inodes, as sysfs reports (statfs(2) on /sys). */
export function encodeStatfsOut(st: Statfs): Buffer {
  const out = Buffer.alloc(KSTATFS.SIZE);
  out.writeUInt32LE(st.bsize, KSTATFS.BSIZE);
  out.writeUInt32LE(st.namelen, KSTATFS.NAMELEN);
  out.writeUInt32LE(st.bsize, KSTATFS.FRSIZE);
  return out;
}

export interface DirEntry {
  ino: number;
  name: string;
  type: number;
}

/** Size of one fuse_dirent with `nameBytes` of name (FUSE_DIRENT_SIZE: padded to 8). */
export function direntSize(nameBytes: number): number {
  return (DIRENT.NAME_OFFSET + nameBytes + 7) & ~7;
}

/**
 * The READDIR reply for entries[offset..] that fit in `size` bytes. Each dirent's `off` is the
 * offset of the entry after it, which the kernel sends back as the next READDIR's offset.
 */
export function encodeDirents(entries: readonly DirEntry[], offset: number, size: number): Buffer {
  const parts: Buffer[] = [];
  let used = 0;
  for (let i = offset; i < entries.length; i++) {
    const name = Buffer.from(entries[i].name);
    const len = direntSize(name.length);
    if (used + len > size) break;
    const d = Buffer.alloc(len);
    d.writeBigUInt64LE(BigInt(entries[i].ino), DIRENT.INO);
    d.writeBigUInt64LE(BigInt(i + 1), DIRENT.OFF);
    d.writeUInt32LE(name.length, DIRENT.NAMELEN);
    d.writeUInt32LE(entries[i].type, DIRENT.TYPE);
    name.copy(d, DIRENT.NAME_OFFSET);
    parts.push(d);
    used += len;
  }
  return Buffer.concat(parts, used);
}

/** The whole reply: fuse_out_header then `body` (none for an error), for one write(2). */
export function encodeReply(unique: bigint, error: number, body?: Buffer): Buffer {
  const bodyLen = error === 0 && body !== undefined ? body.length : 0;
  const out = Buffer.allocUnsafe(OUT_HEADER.SIZE + bodyLen);
  out.writeUInt32LE(OUT_HEADER.SIZE + bodyLen, OUT_HEADER.LEN);
  out.writeInt32LE(error, OUT_HEADER.ERROR);
  out.writeBigUInt64LE(unique, OUT_HEADER.UNIQUE);
  if (bodyLen > 0 && body !== undefined) body.copy(out, OUT_HEADER.SIZE);
  return out;
}
