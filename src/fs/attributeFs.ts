/**
 * A sysfs-like FUSE tree: one root directory holding a fixed set of attribute files, each a
 * show()/store() pair (./attribute.ts), with the mechanics of sysfs as the 2005 patch relied on
 * them (fs/sysfs/file.c, Linux 2.6.11) where they matter to a user, and of today's sysfs where a
 * user porting a program would expect it. It speaks the kernel's FUSE protocol itself
 * (./fuseSession.ts, ./fuseProtocol.ts): no libfuse, no fusermount.
 *
 * - root directory 0755, files 0644 (or the attribute's own `mode`), all owned by root, files of
 *   size 4096 (PAGE_SIZE); mounted allow_other + default_permissions, so the kernel checks every
 *   access against those modes: everyone reads, only root writes a 0644 file ("give write access
 *   only to root, otherwise it's a security hole", the patch);
 * - every open file is FOPEN_DIRECT_IO: no page cache, every read(2) and write(2) reaches us;
 * - a read at offset 0 renders show() once and keeps the rendering for that open file; reads at
 *   other offsets continue from it, so `dd bs=1` sees one consistent text. The rendering is
 *   dropped as soon as a read reaches its end (only its length is kept, so further reads at or
 *   past it return 0 without rendering again): an open file holds no text between reads of a
 *   finished rendering. A read at a non-zero offset with no rendering (a first pread, a read
 *   after a write on the same fd, which 2.6.11 also re-rendered via needs_read_fill, or a seek
 *   back into a finished rendering) renders first. Renderings are cut at 4095 bytes (today's
 *   sysfs: PAGE_SIZE - 1), and all the renderings open files hold at once are capped
 *   (MAX_HELD_RENDERING_BYTES; past it the oldest is dropped, and that file's next read at a
 *   non-zero offset renders again), so open files cannot make the daemon's memory grow without
 *   bound;
 * - every write(2) is exactly one store(): the offset is ignored (so `>>` / O_APPEND works), at
 *   most 4095 bytes are considered (2.6.11 fill_write_buffer: count = PAGE_SIZE - 1), cut at the
 *   first NUL and decoded as latin1; it returns that C string's length (the patch's
 *   `return strlen(buf)`, so "12\0ab" returns 2) or fails EINVAL when store() rejects it, or
 *   with the errno of a StoreFailure. One exception to strlen: a write whose string is empty
 *   ("\0", "\0abc", printf '%s\0' '') returns the bytes it offered (at most 4095), because a
 *   0 return makes every write-all loop (stdio, shells) retry forever;
 * - truncate/ftruncate (`echo >` opens O_TRUNC) and utimens (`touch`) succeed and do nothing;
 * - creating a file fails EACCES and mknod/unlink/mkdir/rmdir/rename/link/symlink/chmod/chown/
 *   setxattr fail EPERM: what the VFS and kernfs answer for the same calls on /sys; unknown paths
 *   are ENOENT; any other request is ENOSYS, which the kernel turns into its own answer (e.g.
 *   EOPNOTSUPP for getxattr).
 */
import { EventEmitter } from 'node:events';
import { constants as fsConstants, fstatSync, readFileSync, statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import {
  Errno,
  MNT_DETACH,
  MS_NODEV,
  MS_NOSUID,
  O_CLOEXEC,
  O_RDWR,
  close as closeFd,
  isSyscallError,
  mount as mountSyscall,
  open as openSyscall,
  umount2,
} from '../native/libc';
import path from 'node:path';
import type { Attribute, Caller, StoreOutcome } from './attribute';
import { FsMountError } from './errors';
import {
  DT_DIR,
  DT_REG,
  FOPEN_DIRECT_IO,
  FUSE_ROOT_ID,
  Fattr,
  Opcode,
  READ_IN,
  RELEASE_IN,
  SETATTR_IN,
  WRITE_IN,
  encodeAttrOut,
  encodeDirents,
  encodeEntryOut,
  encodeOpenOut,
  encodeStatfsOut,
  encodeWriteOut,
  type Attr,
  type DirEntry,
} from './fuseProtocol';
import {
  FuseInitError,
  FuseSession,
  type FuseFilesystem,
  type FuseProtocolInfo,
  type FuseReply,
  type FuseRequest,
} from './fuseSession';
import {
  FUSE_KERNEL_MINOR_VERSION,
  FUSE_KERNEL_VERSION,
  FUSE_MIN_KERNEL_MINOR,
} from './fuseProtocol';
import {
  abortConnection,
  handoverName,
  parseHandoverName,
  treeSignature,
  type FuseHandover,
} from './handover';
import { MOUNTINFO_PATH, parseMountInfo, readMountInfo, topMountAt } from './mountInfo';
import {
  FUSE_DEVICE,
  canonicalize,
  checkFuseDevice,
  checkRoot,
  checkThreadPool,
  prepareMountpoint,
  type MountpointNotice,
} from './preflight';

/** sysfs buffers are one page (fs/sysfs/file.c, Linux 2.6.11). */
export const SYSFS_PAGE_SIZE = 4096;
/** A store() sees at most PAGE_SIZE - 1 bytes of a write (2.6.11 fill_write_buffer). */
export const STORE_MAX_BYTES = SYSFS_PAGE_SIZE - 1;
/** A rendering is cut at PAGE_SIZE - 1 bytes (today's sysfs_kf_seq_show). */
export const SHOW_MAX_BYTES = SYSFS_PAGE_SIZE - 1;
/**
 * fuse_init_out.max_write: one page, the least the kernel allows (fs/fuse/inode.c
 * process_init_reply raises anything smaller to 4096). A write(2) larger than this reaches us
 * as its first 4096 bytes only: we answer with at most 4095, fewer than the request carried, so
 * the kernel's direct-I/O loop (fs/fuse/file.c fuse_direct_io: `if (nres != nbytes) break;`)
 * stops there and write(2) returns the short count. Every write(2) is thus one store, whatever
 * its size, and no request carries more than a page of data.
 */
export const FUSE_MAX_WRITE = SYSFS_PAGE_SIZE;
/**
 * The most bytes of renderings held for reads partway through, over all open files together:
 * 4096 full renderings. A user holding more files open, each read partway, only makes the oldest
 * lose their consistent rendering.
 */
export const MAX_HELD_RENDERING_BYTES = 16 * 1024 * 1024;
/** Default for AttributeFsOptions.requestTimeoutSeconds. */
export const DEFAULT_REQUEST_TIMEOUT_SECONDS = 30;
/** Default permission bits of an attribute file. */
export const DEFAULT_FILE_MODE = 0o644;

export interface AttributeFsOptions {
  /** Every request emitted as a 'fuse-request' notice (opcode, node, caller, answer). */
  debug?: boolean;
  /** Shown in /proc/mounts as the source and as the type `fuse.<fsName>`. Default "relayfork". */
  fsName?: string;
  /**
   * Seconds the kernel waits for any reply before it aborts the connection (FUSE_REQUEST_TIMEOUT,
   * Linux 6.14 and later; the kernel checks every 15 s, so an abort comes up to 15 s later, and
   * /proc/sys/fs/fuse/max_request_timeout caps it). A hung server then fails its callers with
   * ECONNABORTED instead of blocking them forever. 0: no timeout. Default 30. Older kernels
   * ignore it (see the 'fuse-initialized' notice).
   */
  requestTimeoutSeconds?: number;
}

/** What the tree did that a daemon should log; never an error the daemon must act on. */
export type AttributeFsNotice =
  | MountpointNotice
  | {
      kind: 'fuse-initialized';
      protocol: FuseProtocolInfo;
      message: string;
    }
  | { kind: 'unmounted-lazily'; mountpoint: string; message: string }
  | { kind: 'adopted'; mountpoint: string; orphansAnswered: number; message: string }
  | { kind: 'left-mounted'; mountpoint: string; message: string }
  | { kind: 'unmount-skipped'; mountpoint: string; message: string }
  | {
      kind: 'attribute-failed';
      file: string;
      operation: 'show' | 'store';
      error: unknown;
      message: string;
    }
  | { kind: 'fuse-problem'; error: unknown; message: string }
  | { kind: 'fuse-request'; opcode: number; nodeid: number; caller: Caller; message: string };

export interface AttributeFsEvents {
  notice: [notice: AttributeFsNotice];
}

/** One file of the tree: its node id (FUSE_ROOT_ID + 1...) and attributes. */
interface FileNode {
  name: string;
  attribute: Attribute;
  attr: Attr;
}

/**
 * The state of one open file: a few dozen bytes, plus a rendering only while a read is partway
 * through it. Freed on RELEASE.
 */
interface OpenFile {
  node: FileNode;
  /** The bytes of the last show(), until a read reaches their end or a write drops them. */
  rendering: Buffer | undefined;
  /** The length of a rendering read to its end and dropped; -1 when there is none. */
  finishedLength: number;
}

const S_IFDIR = fsConstants.S_IFDIR;
const S_IFREG = fsConstants.S_IFREG;
const ROOT_MODE = 0o755;
/** Entry and attribute validity: the attributes never change while mounted. */
const ATTR_VALID_SECONDS = 1;
/** How long close() waits for the reader to see the connection end after a full unmount. */
const READER_STOP_MS = 5000;
/** How long an adopted connection has to answer a readdir of its own mount. */
const ADOPT_PROOF_TIMEOUT_MS = 5000;

/** Why a handed-over connection was not taken over (it has been aborted and closed). */
export class AdoptRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AdoptRefused';
  }
}
/** mount(2) options (fs/fuse/inode.c fuse_parse_param); see doMount(). */
function mountData(fd: number): string {
  return `fd=${fd},rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions`;
}

export class AttributeFs extends EventEmitter<AttributeFsEvents> {
  private readonly requested: string;
  /** Node id -> file. */
  private readonly nodes = new Map<number, FileNode>();
  private readonly byName = new Map<string, FileNode>();
  private readonly dirEntries: DirEntry[];
  private readonly options: Required<AttributeFsOptions>;
  private readonly rootAttr: Attr;
  private readonly handles = new Map<number, OpenFile>();
  /** Open files holding a rendering, oldest first (a Map keeps insertion order), and its size. */
  private readonly held = new Map<OpenFile, number>();
  private heldBytes = 0;
  private lastHandle = 0;
  private mounted: string | undefined;
  /** "major:minor" of our mount in mountinfo: how close() knows the mount there is still ours. */
  private device: string | undefined;
  private session: FuseSession | undefined;
  /** The /dev/fuse fd while the session owns it. */
  private fuseFd: number | undefined;
  private readonly tree: string;
  private mounting: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    mountpoint: string,
    files: Record<string, Attribute>,
    options: AttributeFsOptions = {},
  ) {
    super();
    this.requested = mountpoint;
    const fsName = options.fsName ?? 'relayfork';
    if (!/^[A-Za-z0-9_.-]+$/.test(fsName)) {
      throw new TypeError(
        `AttributeFs: fsName must match [A-Za-z0-9_.-]+ (got ${JSON.stringify(fsName)})`,
      );
    }
    const timeout = options.requestTimeoutSeconds ?? DEFAULT_REQUEST_TIMEOUT_SECONDS;
    if (!Number.isInteger(timeout) || timeout < 0 || timeout > 0xffff) {
      throw new TypeError(
        `AttributeFs: requestTimeoutSeconds must be an integer in 0..65535 (got ${timeout})`,
      );
    }
    this.options = { debug: options.debug ?? false, fsName, requestTimeoutSeconds: timeout };
    const timeSec = Math.floor(Date.now() / 1000);
    const common = { uid: 0, gid: 0, size: SYSFS_PAGE_SIZE, timeSec };
    this.rootAttr = { ...common, ino: FUSE_ROOT_ID, mode: S_IFDIR | ROOT_MODE, nlink: 2 };
    this.dirEntries = [
      { ino: FUSE_ROOT_ID, name: '.', type: DT_DIR },
      { ino: FUSE_ROOT_ID, name: '..', type: DT_DIR },
    ];
    let ino = FUSE_ROOT_ID;
    for (const [name, attribute] of Object.entries(files)) {
      if (
        name === '' ||
        name === '.' ||
        name === '..' ||
        /[/\0]/.test(name) ||
        Buffer.byteLength(name) > 255
      ) {
        throw new TypeError(`AttributeFs: ${JSON.stringify(name)} is not a valid file name`);
      }
      const mode = attribute.mode ?? DEFAULT_FILE_MODE;
      if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) {
        throw new TypeError(
          `AttributeFs: the mode of ${name} must be permission bits in 0..0o777 (got ${mode})`,
        );
      }
      ino++;
      const node = { name, attribute, attr: { ...common, ino, mode: S_IFREG | mode, nlink: 1 } };
      this.nodes.set(ino, node);
      this.byName.set(name, node);
      this.dirEntries.push({ ino, name, type: DT_REG });
    }
    this.tree = treeSignature(
      fsName,
      [...this.nodes.values()].map((n) => ({ name: n.name, mode: n.attr.mode })),
    );
  }

  /** The directory mounted on (absolute and symlink-free once mounted). */
  get mountpoint(): string {
    return this.mounted ?? this.requested;
  }

  /** Open files (handles) the tree is keeping state for. */
  get openFiles(): number {
    return this.handles.size;
  }

  /** Bytes of renderings held by open files partway through a read (at most MAX_HELD_RENDERING_BYTES). */
  get renderingBytes(): number {
    return this.heldBytes;
  }

  /** What FUSE_INIT settled with the kernel, once mounted. */
  get protocol(): FuseProtocolInfo | undefined {
    return this.session?.protocol;
  }

  /**
   * Check the machine and the mountpoint (FsMountError on anything a user must fix), then mount.
   * Resolves once the kernel's FUSE_INIT has been answered, i.e. the files can be used.
   */
  mount(): Promise<void> {
    if (this.closing !== undefined) {
      return Promise.reject(
        new FsMountError(
          'CLOSED',
          `the FUSE tree at ${this.mountpoint} was closed: create a new one`,
        ),
      );
    }
    this.mounting ??= this.doMount();
    return this.mounting;
  }

  /** Unmount and stop serving. Idempotent; safe before or after mount. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  /**
   * The live connection for a successor (systemd's fd store): the /dev/fuse fd, still owned by
   * this tree, and a name describing it (./handover.ts). undefined before mount or after close.
   */
  handover(): FuseHandover | undefined {
    const protocol = this.session?.protocol;
    if (this.fuseFd === undefined || protocol === undefined || this.device === undefined) {
      return undefined;
    }
    const name = handoverName({
      protocolMajor: protocol.kernelMajor,
      protocolMinor: protocol.minor,
      device: this.device,
      tree: this.tree,
    });
    return { fd: this.fuseFd, name };
  }

  /**
   * Serve a connection a previous server handed over instead of mounting: the mount stays where
   * it is, and callers waiting on it are answered by this tree from now on. Checks first that
   * the fd is /dev/fuse, that the name describes this tree and a protocol this code speaks, and
   * that the mount at the mountpoint is that connection's; then proves it with a readdir of the
   * mount that this session must answer. On any failure the connection is aborted (its mount
   * turns stale, so mount() can clear it) and the fd closed, and AdoptRefused says why.
   */
  adopt(handover: FuseHandover): Promise<void> {
    if (this.closing !== undefined || this.mounting !== undefined) {
      // Rejected, not thrown: a caller's await/catch sees it like every other refusal.
      return Promise.reject(
        new TypeError('AttributeFs.adopt: the tree is already mounted or closed'),
      );
    }
    const attempt = this.doAdopt(handover);
    this.mounting = attempt;
    // A refusal leaves the tree unmounted, ready for mount().
    attempt.catch(() => {
      if (this.mounting === attempt) this.mounting = undefined;
    });
    return attempt;
  }

  /**
   * Stop serving but leave the mount and its connection as they are, for a successor that got
   * the fd (systemd's fd store): callers' requests wait in the kernel until it reads them.
   * Idempotent, and close() afterwards does nothing.
   */
  leaveMounted(): Promise<void> {
    this.closing ??= (async () => {
      if (this.mounting !== undefined) await this.mounting.catch(() => undefined);
      const session = this.session;
      this.session = undefined;
      if (session === undefined) return;
      // Every request the reader took gets its answer; the rest wait in the kernel for the
      // next process.
      await session.stopReading();
      this.emit('notice', {
        kind: 'left-mounted',
        mountpoint: this.mountpoint,
        message: `left ${this.mountpoint} mounted for the next start (its connection is in systemd's fd store)`,
      });
    })();
    return this.closing;
  }

  private async doAdopt({ fd, name }: FuseHandover): Promise<void> {
    // Before anything touches the connection: with a pool this tree cannot serve from, the fd
    // stays as it is (in systemd's fd store) for a start with a usable environment.
    checkThreadPool();
    const described = parseHandoverName(name);
    // No stat, realpath or lookup of the mountpoint itself: the mount is served by this very fd,
    // and nobody reads it until the session below starts.
    const target = await canonicalize(path.resolve(this.requested)).catch(() => undefined);
    const refuse = (why: string): never => {
      if (described !== undefined) this.abandonConnection(described.device, target);
      try {
        closeFd(fd);
      } catch {
        // Already closed.
      }
      throw new AdoptRefused(why);
    };
    if (described === undefined) return refuse(`${JSON.stringify(name)} names no FUSE connection`);
    if (described.tree !== this.tree) {
      return refuse('it served another set of files (a different version or options)');
    }
    if (
      described.protocolMajor !== FUSE_KERNEL_VERSION ||
      described.protocolMinor < FUSE_MIN_KERNEL_MINOR ||
      described.protocolMinor > FUSE_KERNEL_MINOR_VERSION
    ) {
      return refuse(
        `it speaks FUSE ${described.protocolMajor}.${described.protocolMinor}, which this version does not`,
      );
    }
    try {
      if (fstatSync(fd).rdev !== statSync(FUSE_DEVICE).rdev) {
        return refuse(`it is not ${FUSE_DEVICE}`);
      }
    } catch (err) {
      return refuse(`fd ${fd} cannot be examined (${String(err)})`);
    }
    const top = target === undefined ? undefined : topMountAt(await readMountInfo(), target);
    if (
      target === undefined ||
      top === undefined ||
      top.fsType !== `fuse.${this.options.fsName}` ||
      top.device !== described.device
    ) {
      return refuse(`the mount at ${this.requested} is not the one it served`);
    }
    const protocol: FuseProtocolInfo = {
      kernelMajor: described.protocolMajor,
      kernelMinor: described.protocolMinor,
      minor: described.protocolMinor,
      requestTimeoutSeconds: 0,
      kernelHasRequestTimeout: false,
    };
    // Handles of the previous server may still be open in the kernel: number ours from a
    // different base, so an old fh never names one of our open files.
    this.lastHandle = (Date.now() % 2 ** 20) * 2 ** 32;
    const session = this.startSession(fd, target, protocol);
    const before = session.counters.requests;
    let timer: NodeJS.Timeout | undefined;
    const proved = await Promise.race([
      readdir(target).then(
        () => session.counters.requests > before,
        () => false,
      ),
      new Promise<false>((resolve) => (timer = setTimeout(resolve, ADOPT_PROOF_TIMEOUT_MS, false))),
    ]);
    clearTimeout(timer);
    if (!proved) {
      this.session = undefined;
      this.fuseFd = undefined;
      this.mounted = undefined;
      this.abandonConnection(described.device, target);
      session.unref();
      await session.waitForEnd(READER_STOP_MS);
      throw new AdoptRefused(`a readdir of ${target} was not answered through it`);
    }
    this.device = described.device;
    this.emit('notice', {
      kind: 'adopted',
      mountpoint: target,
      orphansAnswered: session.counters.orphansAnswered,
      message:
        `took over the mount at ${target} from the previous run (FUSE ${protocol.kernelMajor}.${protocol.minor})` +
        (session.counters.orphansAnswered > 0
          ? `; ${session.counters.orphansAnswered} requests it had left unanswered got EIO`
          : ''),
    });
  }

  /**
   * A connection not taken over must not keep its mount waiting for a server: abort it through
   * fusectl (its callers get ENOTCONN, the mount turns stale, systemd drops its copy), or where
   * fusectl is not mounted, detach its mount from the mountpoint, if it is there (the kernel
   * ends the connection once the mount's last user and the last fd are gone).
   */
  private abandonConnection(device: string, mountpoint: string | undefined): void {
    if (abortConnection(device) || mountpoint === undefined) return;
    try {
      const top = topMountAt(parseMountInfo(readFileSync(MOUNTINFO_PATH, 'utf8')), mountpoint);
      if (top?.device === device) umount2(mountpoint, MNT_DETACH);
    } catch {
      // Best effort: mount() then reports whatever is left at the mountpoint.
    }
  }

  /** Serve `fd` for the mount at `mountpoint`: the session, its problems as notices. */
  private startSession(fd: number, mountpoint: string, adopted?: FuseProtocolInfo): FuseSession {
    this.mounted = mountpoint;
    this.fuseFd = fd;
    const session = new FuseSession(fd, this.filesystem(), {
      maxWrite: FUSE_MAX_WRITE,
      requestTimeoutSeconds: this.options.requestTimeoutSeconds,
      adopted,
    });
    this.session = session;
    session.on('problem', (message, error) =>
      this.safeEmit({ kind: 'fuse-problem', error, message }),
    );
    void session.ended.then(() => {
      if (this.session === session || this.session === undefined) this.fuseFd = undefined;
    });
    return session;
  }

  private async doMount(): Promise<void> {
    checkRoot();
    checkThreadPool();
    await checkFuseDevice();
    const prepared = await prepareMountpoint(this.requested);
    for (const notice of prepared.notices) this.emit('notice', notice);

    const fsName = this.options.fsName;
    let fd: number;
    try {
      fd = openSyscall(FUSE_DEVICE, O_RDWR | O_CLOEXEC);
    } catch (err) {
      throw new FsMountError(
        'ENODEV_FUSE',
        `cannot open ${FUSE_DEVICE} (${(err as Error).message}): load the FUSE module (modprobe fuse); in Docker, run with --device /dev/fuse`,
        { cause: err },
      );
    }
    try {
      // fd=: the connection; rootmode=40000: the root is a directory; user_id/group_id: the
      // mount's owner (root), which allow_other lets everyone else use too; default_permissions:
      // the kernel checks each access against the modes we report (fs/fuse/inode.c
      // fuse_parse_param). MS_NOSUID|MS_NODEV as libfuse and fusermount always mount FUSE.
      // mount(2) does not wait for the server: the kernel queues FUSE_INIT and returns.
      mountSyscall(fsName, prepared.path, `fuse.${fsName}`, MS_NOSUID | MS_NODEV, mountData(fd));
    } catch (err) {
      closeFd(fd);
      throw new FsMountError(
        'MOUNT_FAILED',
        `mounting FUSE on ${prepared.path} failed (${(err as Error).message}): check dmesg and the mountpoint`,
        { cause: err },
      );
    }
    const session = this.startSession(fd, prepared.path);
    let protocol: FuseProtocolInfo;
    try {
      protocol = await session.init();
    } catch (err) {
      this.session = undefined;
      await this.undoFailedMount(prepared.path, session);
      throw new FsMountError(
        err instanceof FuseInitError ? 'FUSE_PROTOCOL' : 'MOUNT_FAILED',
        err instanceof FuseInitError
          ? err.message
          : `mounting FUSE on ${prepared.path} failed (${String(err)})`,
        { cause: err },
      );
    }
    const timeout =
      protocol.requestTimeoutSeconds > 0
        ? `request timeout ${protocol.requestTimeoutSeconds} s`
        : protocol.kernelHasRequestTimeout
          ? 'no request timeout'
          : 'no request timeout (the kernel has none before Linux 6.14)';
    this.emit('notice', {
      kind: 'fuse-initialized',
      protocol,
      message: `FUSE protocol ${protocol.kernelMajor}.${protocol.minor} (the kernel's: ${protocol.kernelMajor}.${protocol.kernelMinor}), ${timeout}`,
    });
    const ours = topMountAt(await readMountInfo(), prepared.path);
    this.device = ours?.fsType === `fuse.${fsName}` ? ours.device : undefined;
  }

  private async doClose(): Promise<void> {
    if (this.mounting !== undefined) await this.mounting.catch(() => undefined);
    const session = this.session;
    this.session = undefined;
    if (session === undefined) return;
    let outcome: 'unmounted' | 'detached' | 'skipped';
    try {
      outcome = await this.unmountKernel();
    } catch (err) {
      // A mount we could not end must not also keep the process alive forever; the kernel ends
      // the connection when the process exits.
      session.unref();
      throw err;
    }
    if (outcome !== 'unmounted') {
      // Still served (open files on a detached mount, or a mount covered by another): the reader
      // goes on until the kernel ends the connection, without keeping the process alive.
      session.unref();
      void session.ended.then(() => this.forgetOpenFiles());
      return;
    }
    // The kernel aborted the connection at unmount: the reader reads ENODEV and the session ends.
    if (await session.waitForEnd(READER_STOP_MS)) this.forgetOpenFiles();
    else void session.ended.then(() => this.forgetOpenFiles());
  }

  /**
   * umount2 our mount, only if the mount at the mountpoint is still ours (someone may have
   * unmounted it and mounted something else there). Open files make a plain unmount fail EBUSY:
   * then detach it (MNT_DETACH); the kernel ends it when the last file is closed.
   */
  private async unmountKernel(): Promise<'unmounted' | 'detached' | 'skipped'> {
    const mountpoint = this.mounted;
    if (mountpoint === undefined) return 'unmounted';
    const entries = await readMountInfo();
    const top = topMountAt(entries, mountpoint);
    const isOurs = (device: string, fsType: string): boolean =>
      this.device !== undefined ? device === this.device : fsType === `fuse.${this.options.fsName}`;
    if (top === undefined || !isOurs(top.device, top.fsType)) {
      if (entries.some((e) => isOurs(e.device, e.fsType) && e.mountPoint === mountpoint)) {
        this.emit('notice', {
          kind: 'unmount-skipped',
          mountpoint,
          message: `not unmounting ${mountpoint}: another mount now covers ours; unmount both with umount -l ${mountpoint}`,
        });
        return 'skipped';
      }
      return 'unmounted'; // someone else unmounted it: the connection is over
    }
    try {
      umount2(mountpoint, 0);
      return 'unmounted';
    } catch (err) {
      if (isSyscallError(err, 'EINVAL')) return 'unmounted'; // no longer a mount point
      if (!isSyscallError(err, 'EBUSY')) throw err;
      umount2(mountpoint, MNT_DETACH);
      this.emit('notice', {
        kind: 'unmounted-lazily',
        mountpoint,
        message: `${mountpoint} was busy (files open on it): detached it; the kernel ends it when they are closed`,
      });
      return 'detached';
    }
  }

  /** A failed FUSE_INIT must leave neither a mount nor a reader behind. */
  private async undoFailedMount(mountpoint: string, session: FuseSession): Promise<void> {
    try {
      const top = topMountAt(await readMountInfo(), mountpoint);
      if (top?.fsType === `fuse.${this.options.fsName}`) umount2(mountpoint, MNT_DETACH);
    } catch {
      // Best effort: the FsMountError the caller gets says what failed.
    }
    await session.waitForEnd(READER_STOP_MS);
    this.mounted = undefined;
  }

  // -------------------------------------------------------------------------------------------
  // FUSE requests. Each runs on the JS thread and answers synchronously; an exception becomes
  // EIO for that request (FuseSession), never a crash on user input.

  private filesystem(): FuseFilesystem {
    return {
      handle: (request) => {
        const answer = this.handle(request);
        if (this.options.debug) this.debugNotice(request, answer);
        return answer;
      },
    };
  }

  private handle({ header, body }: FuseRequest): FuseReply {
    const nodeid = Number(header.nodeid);
    const isRoot = nodeid === FUSE_ROOT_ID;
    const node = this.nodes.get(nodeid);
    const exists = isRoot || node !== undefined;
    switch (header.opcode) {
      case Opcode.LOOKUP: {
        if (!isRoot) return { errno: exists ? Errno.ENOTDIR : Errno.ENOENT };
        const nul = body.indexOf(0);
        const found = this.byName.get(body.toString('utf8', 0, nul < 0 ? body.length : nul));
        if (found === undefined) return { errno: Errno.ENOENT };
        return { body: encodeEntryOut(found.attr.ino, found.attr, ATTR_VALID_SECONDS) };
      }
      case Opcode.GETATTR: {
        const attr = isRoot ? this.rootAttr : node?.attr;
        if (attr === undefined) return { errno: Errno.ENOENT };
        return { body: encodeAttrOut(attr, ATTR_VALID_SECONDS) };
      }
      case Opcode.SETATTR:
        return this.setattr(isRoot ? this.rootAttr : node?.attr, body);
      case Opcode.ACCESS:
        // Only sent without default_permissions (fs/fuse/dir.c fuse_permission); the kernel has
        // checked the modes already.
        return exists ? { body: Buffer.alloc(0) } : { errno: Errno.ENOENT };
      case Opcode.OPEN: {
        if (node === undefined) return { errno: isRoot ? Errno.EISDIR : Errno.ENOENT };
        const fh = ++this.lastHandle;
        this.handles.set(fh, { node, rendering: undefined, finishedLength: -1 });
        return { body: encodeOpenOut(fh, FOPEN_DIRECT_IO) };
      }
      case Opcode.READ:
        if (node === undefined) return { errno: isRoot ? Errno.EISDIR : Errno.ENOENT };
        return this.read(node, body);
      case Opcode.WRITE:
        if (node === undefined) return { errno: isRoot ? Errno.EISDIR : Errno.ENOENT };
        return this.write(node, body, { pid: header.pid, uid: header.uid, gid: header.gid });
      case Opcode.FLUSH:
      case Opcode.RELEASEDIR:
        return { body: Buffer.alloc(0) };
      case Opcode.RELEASE: {
        const fh = Number(body.readBigUInt64LE(RELEASE_IN.FH));
        const open = this.handles.get(fh);
        if (open !== undefined) this.dropRendering(open, -1);
        this.handles.delete(fh);
        return { body: Buffer.alloc(0) };
      }
      case Opcode.OPENDIR:
        if (!isRoot) return { errno: exists ? Errno.ENOTDIR : Errno.ENOENT };
        return { body: encodeOpenOut(0, 0) };
      case Opcode.READDIR: {
        if (!isRoot) return { errno: exists ? Errno.ENOTDIR : Errno.ENOENT };
        const offset = Number(body.readBigUInt64LE(READ_IN.OFFSET));
        const size = body.readUInt32LE(READ_IN.SIZE_);
        return { body: encodeDirents(this.dirEntries, offset, size) };
      }
      case Opcode.STATFS:
        // statfs(2) on /sys: no blocks, no inodes, 4096-byte blocks, 255-byte names.
        return { body: encodeStatfsOut({ bsize: SYSFS_PAGE_SIZE, namelen: 255 }) };
      case Opcode.CREATE:
        // lookup_open() answers EACCES when a directory has no ->create (fs/namei.c), as on
        // /sys. Answering ENOSYS would make the kernel fall back to MKNOD (fuse_atomic_open).
        return { errno: Errno.EACCES };
      case Opcode.MKNOD:
      case Opcode.MKDIR:
      case Opcode.UNLINK:
      case Opcode.RMDIR:
      case Opcode.RENAME:
      case Opcode.RENAME2:
      case Opcode.LINK:
      case Opcode.SYMLINK:
      case Opcode.SETXATTR:
        // vfs_mknod/unlink/link/symlink answer EPERM without the op; kernfs mkdir/rmdir/rename
        // and setting an xattr on a sysfs file as well.
        return { errno: Errno.EPERM };
      default:
        // FSYNC, GETXATTR, LISTXATTR, ...: the kernel remembers ENOSYS and answers itself.
        return { errno: Errno.ENOSYS };
    }
  }

  private setattr(attr: Attr | undefined, body: Buffer): FuseReply {
    if (attr === undefined) return { errno: Errno.ENOENT };
    const valid = body.readUInt32LE(SETATTR_IN.VALID);
    // chmod/chown: EPERM, as kernfs for root (non-root callers are refused by the kernel already,
    // default_permissions). Size (truncate, O_TRUNC) and times (touch) succeed and change nothing.
    if ((valid & (Fattr.MODE | Fattr.UID | Fattr.GID)) !== 0) return { errno: Errno.EPERM };
    return { body: encodeAttrOut(attr, ATTR_VALID_SECONDS) };
  }

  private read(node: FileNode, body: Buffer): FuseReply {
    const open = this.handles.get(Number(body.readBigUInt64LE(READ_IN.FH)));
    const offset = Number(body.readBigUInt64LE(READ_IN.OFFSET));
    const size = body.readUInt32LE(READ_IN.SIZE_);
    const state: OpenFile =
      open?.node === node ? open : { node, rendering: undefined, finishedLength: -1 };
    if (offset !== 0 && state.rendering === undefined && state.finishedLength >= 0) {
      // Past the end of a rendering read to its end: EOF, as it would have been.
      if (offset >= state.finishedLength) return { body: Buffer.alloc(0) };
    }
    let rendering = state.rendering;
    if (offset === 0 || rendering === undefined) {
      let text: string;
      try {
        text = node.attribute.show();
      } catch (error) {
        this.attributeFailed(node.name, 'show', error);
        return { errno: Errno.EIO };
      }
      // latin1 is one byte per char: cutting the text cuts the bytes, and nothing larger is kept.
      rendering = Buffer.from(text.slice(0, SHOW_MAX_BYTES), 'latin1');
    }
    const end = Math.min(rendering.length, offset + size);
    // A copy: the reply must not pin the rendering, which may be dropped now.
    const out = offset < end ? Buffer.from(rendering.subarray(offset, end)) : Buffer.alloc(0);
    if (end >= rendering.length) this.dropRendering(state, rendering.length);
    // Kept only for a handle of ours (an unknown fh has nowhere to keep it).
    else if (state === open && state.rendering !== rendering) this.holdRendering(state, rendering);
    return { body: out };
  }

  private write(node: FileNode, body: Buffer, caller: Caller): FuseReply {
    const size = body.readUInt32LE(WRITE_IN.SIZE_);
    const data = body.subarray(WRITE_IN.SIZE, WRITE_IN.SIZE + size);
    const considered = data.subarray(0, Math.min(data.length, STORE_MAX_BYTES));
    const nul = considered.indexOf(0);
    const text = considered.toString('latin1', 0, nul < 0 ? considered.length : nul);
    let outcome: StoreOutcome;
    try {
      outcome = node.attribute.store(text, caller);
    } catch (error) {
      this.attributeFailed(node.name, 'store', error);
      return { errno: Errno.EIO };
    }
    const open = this.handles.get(Number(body.readBigUInt64LE(WRITE_IN.FH)));
    if (open !== undefined) this.dropRendering(open, -1);
    if (outcome === 'rejected') return { errno: Errno.EINVAL };
    if (outcome !== 'accepted') return { errno: Errno[outcome.errno] };
    // strlen, except that an empty string consumes what was offered (see the header comment).
    return { body: encodeWriteOut(text.length > 0 ? text.length : considered.length) };
  }

  private forgetOpenFiles(): void {
    this.handles.clear();
    this.held.clear();
    this.heldBytes = 0;
  }

  /** Keep `rendering` for `state`, newest; drop the oldest held renderings past the cap. */
  private holdRendering(state: OpenFile, rendering: Buffer): void {
    this.dropRendering(state, -1);
    state.rendering = rendering;
    this.held.set(state, rendering.length);
    this.heldBytes += rendering.length;
    for (const [oldest] of this.held) {
      if (this.heldBytes <= MAX_HELD_RENDERING_BYTES) break;
      this.dropRendering(oldest, -1);
    }
  }

  /** Forget `state`'s rendering; `finishedLength` is its length if read to the end, else -1. */
  private dropRendering(state: OpenFile, finishedLength: number): void {
    const bytes = this.held.get(state);
    if (bytes !== undefined) {
      this.held.delete(state);
      this.heldBytes -= bytes;
    }
    state.rendering = undefined;
    state.finishedLength = finishedLength;
  }

  private debugNotice(request: FuseRequest, answer: FuseReply): void {
    const { header } = request;
    const result = 'errno' in answer ? `errno ${answer.errno}` : `${answer.body.length} bytes`;
    this.safeEmit({
      kind: 'fuse-request',
      opcode: header.opcode,
      nodeid: Number(header.nodeid),
      caller: { pid: header.pid, uid: header.uid, gid: header.gid },
      message: `FUSE opcode ${header.opcode} node ${header.nodeid} from pid ${header.pid} uid ${header.uid}: ${result}`,
    });
  }

  private attributeFailed(file: string, operation: 'show' | 'store', error: unknown): void {
    this.safeEmit({
      kind: 'attribute-failed',
      file,
      operation,
      error,
      message: `${operation}() of ${file} threw: ${String(error)} (the caller got EIO)`,
    });
  }

  /** Emit from inside a request: a throwing listener must not turn into the caller's EIO. */
  private safeEmit(notice: AttributeFsNotice): void {
    try {
      this.emit('notice', notice);
    } catch {
      // Nothing more we can do for a listener that throws while we report a failure.
    }
  }
}
