/**
 * The part of fuse-native 2.2.6 (node_modules/fuse-native/index.js) that src/fs uses, typed.
 *
 * Result convention of every callback (index.js `signal`): the first argument is the result the
 * native side hands to libfuse: 0 or a count on success, a negative errno on failure.
 */
declare module 'fuse-native' {
  namespace Fuse {
    /** index.js getStatArray(): times as Date or epoch milliseconds. */
    interface Stat {
      mode: number;
      uid: number;
      gid: number;
      size: number;
      nlink: number;
      mtime: Date | number;
      atime: Date | number;
      ctime: Date | number;
    }

    /** 0 / a byte count, or a negative errno. */
    type ResultCallback = (result: number) => void;
    type StatCallback = (result: number, stat?: Stat) => void;
    type ReaddirCallback = (result: number, names?: readonly string[]) => void;
    /** `fd` becomes fuse_file_info.fh (read as int32 by the binding; 0 means "none"). */
    type OpenCallback = (result: number, fd?: number) => void;

    /** High-level libfuse 2 operations (struct fuse_operations); absent ones are not registered. */
    interface Operations {
      init?(cb: ResultCallback): void;
      getattr?(path: string, cb: StatCallback): void;
      readdir?(path: string, cb: ReaddirCallback): void;
      open?(path: string, flags: number, cb: OpenCallback): void;
      release?(path: string, fd: number, cb: ResultCallback): void;
      /** `buffer` is external memory of the request: valid only until `cb` is called. */
      read?(
        path: string,
        fd: number,
        buffer: Buffer,
        length: number,
        position: number,
        cb: ResultCallback,
      ): void;
      /** `buffer` is external memory of the request: valid only until `cb` is called. */
      write?(
        path: string,
        fd: number,
        buffer: Buffer,
        length: number,
        position: number,
        cb: ResultCallback,
      ): void;
      truncate?(path: string, size: number, cb: ResultCallback): void;
      ftruncate?(path: string, fd: number, size: number, cb: ResultCallback): void;
      utimens?(path: string, atime: number, mtime: number, cb: ResultCallback): void;
      chmod?(path: string, mode: number, cb: ResultCallback): void;
      chown?(path: string, uid: number, gid: number, cb: ResultCallback): void;
      create?(path: string, mode: number, cb: OpenCallback): void;
      mknod?(path: string, mode: number, dev: number, cb: ResultCallback): void;
      unlink?(path: string, cb: ResultCallback): void;
      rename?(src: string, dest: string, cb: ResultCallback): void;
      link?(src: string, dest: string, cb: ResultCallback): void;
      symlink?(src: string, dest: string, cb: ResultCallback): void;
      mkdir?(path: string, mode: number, cb: ResultCallback): void;
      rmdir?(path: string, cb: ResultCallback): void;
    }

    /** The subset of constructor options that index.js `_fuseOptions()` turns into `-o ...`. */
    interface Options {
      debug?: boolean;
      allowOther?: boolean;
      defaultPermissions?: boolean;
      fsname?: string;
      subtype?: string;
      /** false: no per-operation timer (index.js autoTimeout). */
      timeout?: number | false;
    }
  }

  class Fuse {
    constructor(mnt: string, ops: Fuse.Operations, opts?: Fuse.Options);
    /** path.resolve(mnt) */
    readonly mnt: string;
    /** The native fuse_thread_t, allocated by `_open`; null before. */
    protected _thread: Buffer | null;
    /** nanoresource open: calls back once the kernel's FUSE_INIT reached the JS thread. */
    mount(cb: (err: Error | null) => void): void;
    /** nanoresource close: runs `_close` once. */
    close(cb: (err: Error | null) => void): void;
    /** The single `-o a,b,c` argument handed to fuse_mount()/fuse_new(), or ''. */
    protected _fuseOptions(): string;
    /** Unmounts; the stock one runs `fusermount -uz`. */
    protected _close(cb: (err: Error | null) => void): void;

    static readonly EPERM: number;
    static readonly ENOENT: number;
    static readonly EIO: number;
    static readonly EACCES: number;
    static readonly ENOTDIR: number;
    static readonly EISDIR: number;
    static readonly EINVAL: number;
  }

  export = Fuse;
}
