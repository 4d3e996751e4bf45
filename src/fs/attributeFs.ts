/**
 * A sysfs-like FUSE tree: one root directory holding a fixed set of attribute files, each a
 * show()/store() pair (./attribute.ts), with the mechanics of sysfs as the 2005 patch relied on
 * them (fs/sysfs/file.c, Linux 2.6.11) where they matter to a user, and of today's sysfs where a
 * user porting a program would expect it:
 *
 * - root directory 0755, files 0644, all owned by root, files of size 4096 (PAGE_SIZE);
 *   mounted allow_other + default_permissions, so the kernel lets everyone read and only root
 *   write ("give write access only to root, otherwise it's a security hole", the patch);
 * - a read at offset 0 renders show() once and keeps the rendering for that open file; reads at
 *   other offsets continue from it, so `dd bs=1` sees one consistent text. A read at a non-zero
 *   offset with no rendering yet (a first pread, or a read after a write on the same fd, which
 *   2.6.11 also re-rendered via needs_read_fill) renders first. Renderings are cut at 4095 bytes
 *   (today's sysfs: PAGE_SIZE - 1);
 * - every write(2) is exactly one store(): the offset is ignored (so `>>` / O_APPEND works), at
 *   most 4095 bytes are considered (2.6.11 fill_write_buffer: count = PAGE_SIZE - 1), cut at the
 *   first NUL and decoded as latin1; it returns that C string's length (the patch's
 *   `return strlen(buf)`, so "12\0ab" returns 2 and "\0" returns 0) or fails EINVAL when store()
 *   rejects it;
 * - truncate/ftruncate (`echo >` opens O_TRUNC) and utimens (`touch`) succeed and do nothing;
 * - creating a file fails EACCES and mknod/unlink/mkdir/rmdir/rename/link/symlink/chmod/chown fail
 *   EPERM: what the VFS and kernfs answer for the same calls on /sys; unknown paths are ENOENT.
 *
 * The kernel must neither cache nor split: see FUSE_MOUNT_OPTIONS.
 */
import { EventEmitter } from 'node:events';
import { constants as fsConstants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import type Fuse from 'fuse-native';
import { Errno, isSyscallError, MNT_DETACH, umount2 } from '../native/libc';
import type { Attribute, StoreOutcome } from './attribute';
import { FsMountError } from './errors';
import { loadFuseNative, type LoadedFuseNative } from './fuseLoader';
import { readMountInfo, topMountAt } from './mountInfo';
import { checkFuseDevice, checkRoot, prepareMountpoint, type MountpointNotice } from './preflight';

/** sysfs buffers are one page (fs/sysfs/file.c, Linux 2.6.11). */
export const SYSFS_PAGE_SIZE = 4096;
/** A store() sees at most PAGE_SIZE - 1 bytes of a write (2.6.11 fill_write_buffer). */
export const STORE_MAX_BYTES = SYSFS_PAGE_SIZE - 1;
/** A rendering is cut at PAGE_SIZE - 1 bytes (today's sysfs_kf_seq_show). */
export const SHOW_MAX_BYTES = SYSFS_PAGE_SIZE - 1;
/**
 * The largest FUSE WRITE request: libfuse 2.9 caps max_write at its receive buffer (0x21000)
 * minus a page. A write(2) larger than this reaches us as its first request only: we answer with
 * at most 4095, fewer bytes than the request carried, so the kernel's direct-I/O loop
 * (fs/fuse/file.c fuse_direct_io: `if (nres != nbytes) break;`) stops there and write(2) returns
 * the short count. Every write(2) is thus one store, whatever its size.
 */
export const FUSE_MAX_WRITE = 131072;

/**
 * Options appended to fuse-native's own (`allow_other,default_permissions,fsname=,subtype=`):
 * - direct_io: every read and write reaches us (no page cache), and a short write reply reaches
 *   the caller, both of which the sysfs semantics above need;
 * - big_writes: libfuse 2 otherwise asks the kernel for 4096-byte write requests, splitting one
 *   write(2) into several stores;
 * - max_write: see FUSE_MAX_WRITE.
 */
export const FUSE_MOUNT_OPTIONS: readonly string[] = [
  'direct_io',
  'big_writes',
  `max_write=${FUSE_MAX_WRITE}`,
];

export interface AttributeFsOptions {
  /** libfuse's `debug` option: every request logged on stderr. */
  debug?: boolean;
  /** Shown in /proc/mounts as the source and as the type `fuse.<fsName>`. Default "relayfork". */
  fsName?: string;
}

/** What the tree did that a daemon should log; never an error the daemon must act on. */
export type AttributeFsNotice =
  | MountpointNotice
  | { kind: 'libfuse-loaded'; source: 'system' | 'bundled'; path: string; message: string }
  | { kind: 'unmounted-lazily'; mountpoint: string; message: string }
  | { kind: 'unmount-skipped'; mountpoint: string; message: string }
  | {
      kind: 'attribute-failed';
      file: string;
      operation: 'show' | 'store';
      error: unknown;
      message: string;
    }
  | { kind: 'operation-failed'; operation: string; path: string; error: unknown; message: string };

export interface AttributeFsEvents {
  notice: [notice: AttributeFsNotice];
}

interface OpenFile {
  path: string;
  /** The bytes of the last show() on this open file, until a write drops them. */
  rendering: Buffer | undefined;
}

const E = osConstants.errno;
const S_IFDIR = fsConstants.S_IFDIR;
const S_IFREG = fsConstants.S_IFREG;
const ROOT_MODE = 0o755;
const FILE_MODE = 0o644;
/** fh values travel through the binding as int32, and 0 means "no handle". */
const MAX_HANDLE = 0x7fffffff;

export class AttributeFs extends EventEmitter<AttributeFsEvents> {
  private readonly requested: string;
  private readonly files: ReadonlyMap<string, { name: string; attribute: Attribute }>;
  private readonly options: Required<AttributeFsOptions>;
  private readonly rootStat: Fuse.Stat;
  private readonly fileStats = new Map<string, Fuse.Stat>();
  private readonly handles = new Map<number, OpenFile>();
  private lastHandle = 0;
  private mounted: string | undefined;
  /** "major:minor" of our mount in mountinfo: how close() knows the mount there is still ours. */
  private device: string | undefined;
  private fuse: InstanceType<ReturnType<typeof sysfsFuseClass>> | undefined;
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
    this.options = { debug: options.debug ?? false, fsName };
    const byPath = new Map<string, { name: string; attribute: Attribute }>();
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
      byPath.set(`/${name}`, { name, attribute });
    }
    this.files = byPath;
    const now = new Date();
    const common = { uid: 0, gid: 0, size: SYSFS_PAGE_SIZE, mtime: now, atime: now, ctime: now };
    this.rootStat = { ...common, mode: S_IFDIR | ROOT_MODE, nlink: 2 };
    for (const [filePath, { attribute }] of byPath) {
      const mode = S_IFREG | ((attribute.mode ?? FILE_MODE) & 0o777);
      this.fileStats.set(filePath, { ...common, mode, nlink: 1 });
    }
  }

  /** The directory mounted on (absolute and symlink-free once mounted). */
  get mountpoint(): string {
    return this.mounted ?? this.requested;
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

  /** Unmount and release fuse-native's native resources. Idempotent; safe before or after mount. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doMount(): Promise<void> {
    checkRoot();
    await checkFuseDevice();
    const prepared = await prepareMountpoint(this.requested);
    for (const notice of prepared.notices) this.emit('notice', notice);

    const native = loadFuseNative();
    this.emit('notice', {
      kind: 'libfuse-loaded',
      source: native.libfuse.source,
      path: native.libfuse.path,
      message:
        native.libfuse.source === 'system'
          ? 'using the system libfuse.so.2'
          : `using the libfuse.so.2 fuse-native ships (${native.libfuse.path}): the system has none`,
    });

    const SysfsFuse = sysfsFuseClass(native);
    const fuse = new SysfsFuse(
      prepared.path,
      this.operations(),
      {
        debug: this.options.debug,
        allowOther: true,
        defaultPermissions: true,
        fsname: this.options.fsName,
        subtype: this.options.fsName,
        // No per-request timer: every handler here answers synchronously.
        timeout: false,
      },
      () => this.unmountKernel(),
    );
    this.fuse = fuse;
    try {
      await new Promise<void>((resolve, reject) => {
        fuse.mount((err) => (err ? reject(err) : resolve()));
      });
    } catch (err) {
      await this.undoFailedMount(prepared.path);
      throw new FsMountError(
        'MOUNT_FAILED',
        `mounting FUSE on ${prepared.path} failed (${(err as Error).message}; libfuse prints its reason on stderr): check dmesg and the mountpoint`,
        { cause: err },
      );
    }
    this.mounted = prepared.path;
    const ours = topMountAt(await readMountInfo(), prepared.path);
    this.device = ours?.fsType === `fuse.${this.options.fsName}` ? ours.device : undefined;
  }

  private async doClose(): Promise<void> {
    if (this.mounting !== undefined) await this.mounting.catch(() => undefined);
    const fuse = this.fuse;
    this.fuse = undefined;
    if (fuse !== undefined) {
      await new Promise<void>((resolve, reject) => {
        fuse.close((err) => (err ? reject(err) : resolve()));
      });
    }
    this.handles.clear();
  }

  /**
   * umount2 our mount, only if the mount at the mountpoint is still ours (someone may have
   * unmounted it and mounted something else there). Open files make a plain unmount fail EBUSY:
   * then detach it (MNT_DETACH); the kernel ends it when the last file is closed.
   */
  private async unmountKernel(): Promise<void> {
    const mountpoint = this.mounted;
    if (mountpoint === undefined) return;
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
      }
      return;
    }
    try {
      umount2(mountpoint, 0);
    } catch (err) {
      if (isSyscallError(err, 'EINVAL')) return; // no longer a mount point
      if (!isSyscallError(err, 'EBUSY')) throw err;
      umount2(mountpoint, MNT_DETACH);
      this.emit('notice', {
        kind: 'unmounted-lazily',
        mountpoint,
        message: `${mountpoint} was busy (files open on it): detached it; the kernel ends it when they are closed`,
      });
    }
  }

  /** A failed mount must not leave a mount of ours behind. */
  private async undoFailedMount(mountpoint: string): Promise<void> {
    try {
      this.fuse?.releaseNative();
    } catch {
      // Nothing was allocated.
    }
    try {
      const top = topMountAt(await readMountInfo(), mountpoint);
      if (top?.fsType === `fuse.${this.options.fsName}`) umount2(mountpoint, MNT_DETACH);
    } catch {
      // Best effort: the FsMountError the caller gets says what failed.
    }
  }

  // -------------------------------------------------------------------------------------------
  // FUSE operations. Each runs on the JS thread and answers synchronously; none may throw into
  // fuse-native (an exception there is an uncaught exception: the daemon would die on user input).

  private operations(): Fuse.Operations {
    return {
      getattr: (path, cb) =>
        this.guard(
          'getattr',
          path,
          () => cb(-E.EIO),
          () => {
            if (path === '/') cb(0, this.rootStat);
            else if (this.fileStats.has(path)) cb(0, this.fileStats.get(path));
            else cb(-E.ENOENT);
          },
        ),
      readdir: (path, cb) =>
        this.guard(
          'readdir',
          path,
          () => cb(-E.EIO),
          () => {
            if (path === '/') cb(0, ['.', '..', ...[...this.files.values()].map((f) => f.name)]);
            else cb(this.files.has(path) ? -E.ENOTDIR : -E.ENOENT);
          },
        ),
      open: (path, _flags, cb) =>
        this.guard(
          'open',
          path,
          () => cb(-E.EIO),
          () => {
            if (!this.files.has(path)) return cb(path === '/' ? -E.EISDIR : -E.ENOENT);
            const fh = this.allocateHandle();
            this.handles.set(fh, { path, rendering: undefined });
            cb(0, fh);
          },
        ),
      release: (path, fd, cb) =>
        this.guard(
          'release',
          path,
          () => cb(0),
          () => {
            this.handles.delete(fd);
            cb(0);
          },
        ),
      read: (path, fd, buffer, length, position, cb) =>
        this.guard(
          'read',
          path,
          () => cb(-E.EIO),
          () => cb(this.read(path, fd, buffer, length, position)),
        ),
      write: (path, fd, buffer, length, _position, cb) =>
        this.guard(
          'write',
          path,
          () => cb(-E.EIO),
          () => cb(this.write(path, fd, buffer, length)),
        ),
      truncate: (path, _size, cb) => cb(this.existing(path, 0)),
      ftruncate: (path, _fd, _size, cb) => cb(this.existing(path, 0)),
      utimens: (path, _atime, _mtime, cb) => cb(this.existing(path, 0)),
      chmod: (path, _mode, cb) => cb(this.existing(path, -E.EPERM)),
      chown: (path, _uid, _gid, cb) => cb(this.existing(path, -E.EPERM)),
      // lookup_open() answers EACCES when a directory has no ->create (fs/namei.c), as on /sys.
      create: (_path, _mode, cb) => cb(-E.EACCES),
      // vfs_mknod/unlink/link/symlink answer EPERM without the op; kernfs mkdir/rmdir/rename too.
      mknod: (_path, _mode, _dev, cb) => cb(-E.EPERM),
      unlink: (_path, cb) => cb(-E.EPERM),
      rename: (_src, _dest, cb) => cb(-E.EPERM),
      link: (_src, _dest, cb) => cb(-E.EPERM),
      symlink: (_src, _dest, cb) => cb(-E.EPERM),
      mkdir: (_path, _mode, cb) => cb(-E.EPERM),
      rmdir: (_path, cb) => cb(-E.EPERM),
    };
  }

  /** `result` for the root and the files, ENOENT for anything else. */
  private existing(path: string, result: number): number {
    return path === '/' || this.files.has(path) ? result : -E.ENOENT;
  }

  private read(path: string, fh: number, buffer: Buffer, length: number, position: number): number {
    const file = this.files.get(path);
    if (file === undefined) return -E.ENOENT;
    const open = this.handles.get(fh);
    let rendering = open?.path === path ? open.rendering : undefined;
    if (position === 0 || rendering === undefined) {
      let text: string;
      try {
        text = file.attribute.show();
      } catch (error) {
        this.attributeFailed(file.name, 'show', error);
        return -E.EIO;
      }
      rendering = Buffer.from(text, 'latin1').subarray(0, SHOW_MAX_BYTES);
      if (open !== undefined && open.path === path) open.rendering = rendering;
    }
    if (position >= rendering.length) return 0;
    // `buffer` is the request's own memory, valid only until we answer: copy now.
    return rendering.copy(buffer, 0, position, Math.min(rendering.length, position + length));
  }

  private write(path: string, fh: number, buffer: Buffer, length: number): number {
    const file = this.files.get(path);
    if (file === undefined) return -E.ENOENT;
    const considered = buffer.subarray(0, Math.min(length, STORE_MAX_BYTES));
    const nul = considered.indexOf(0);
    const text = considered.toString('latin1', 0, nul < 0 ? considered.length : nul);
    let outcome: StoreOutcome;
    try {
      outcome = file.attribute.store(text);
    } catch (error) {
      this.attributeFailed(file.name, 'store', error);
      return -E.EIO;
    }
    const open = this.handles.get(fh);
    if (open !== undefined) open.rendering = undefined;
    if (outcome === 'accepted') return text.length;
    return outcome === 'rejected' ? -E.EINVAL : -Errno[outcome.errno];
  }

  private allocateHandle(): number {
    do {
      this.lastHandle = this.lastHandle >= MAX_HANDLE ? 1 : this.lastHandle + 1;
    } while (this.handles.has(this.lastHandle));
    return this.lastHandle;
  }

  private guard(operation: string, path: string, fail: () => void, body: () => void): void {
    try {
      body();
    } catch (error) {
      this.safeEmit({
        kind: 'operation-failed',
        operation,
        path,
        error,
        message: `FUSE ${operation} of ${path} failed: ${String(error)}`,
      });
      fail();
    }
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

  /** Emit from inside a FUSE operation: a throwing listener must not escape into fuse-native. */
  private safeEmit(notice: AttributeFsNotice): void {
    try {
      this.emit('notice', notice);
    } catch {
      // Nothing more we can do for a listener that throws while we report a failure.
    }
  }
}

/**
 * fuse-native's Fuse with two changes:
 * - `_fuseOptions()` appends FUSE_MOUNT_OPTIONS (index.js has no way to pass them);
 * - `_close()` unmounts with umount2 instead of running `fusermount -uz` (absent on a fresh
 *   machine), then calls fuse_native_unmount, which only uv_unref()s the mount's async handle so
 *   the loop can exit. The native FUSE thread ends on its own once the kernel aborts the
 *   connection at unmount: fuse_loop_mt() returns, fuse_kern_unmount() sees POLLERR and just
 *   closes /dev/fuse, fuse_destroy() frees the session.
 */
function sysfsFuseClass(native: LoadedFuseNative) {
  return class SysfsFuse extends native.Fuse {
    constructor(
      mnt: string,
      ops: Fuse.Operations,
      opts: Fuse.Options,
      private readonly unmountKernel: () => Promise<void>,
    ) {
      super(mnt, ops, opts);
    }

    protected override _fuseOptions(): string {
      const base = super._fuseOptions();
      const extra = FUSE_MOUNT_OPTIONS.join(',');
      return base === '' ? `-o${extra}` : `${base},${extra}`;
    }

    /** Let the event loop exit: uv_unref the mount's async handle (safe after a failed mount). */
    releaseNative(): void {
      if (this._thread !== null) native.binding.fuse_native_unmount(this.mnt, this._thread);
    }

    protected override _close(cb: (err: Error | null) => void): void {
      const release = (failure: unknown): void => {
        // Release even when unmounting failed: a mount we could not end must not also keep the
        // process alive forever; the kernel ends it when the process exits.
        try {
          this.releaseNative();
        } catch (err) {
          failure ??= err;
        }
        if (failure === undefined) cb(null);
        else cb(failure instanceof Error ? failure : new Error(String(failure)));
      };
      this.unmountKernel().then(() => release(undefined), release);
    }
  };
}
