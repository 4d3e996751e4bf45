/**
 * Start-up errors of the FUSE tree. Each message is one line a user can act on: what is wrong,
 * then what to do (GUIDE: "User-facing errors print one clear line").
 */
export type FsMountErrorCode =
  /** Not running as root: mount(2) needs CAP_SYS_ADMIN and we never fall back to fusermount. */
  | 'NOT_ROOT'
  /** UV_THREADPOOL_SIZE leaves libuv's pool one thread, which the FUSE server's wait would hold. */
  | 'THREAD_POOL'
  /** /dev/fuse is missing, not a character device, or cannot be opened. */
  | 'ENODEV_FUSE'
  /** The mountpoint (or one of its parents) exists and is not a directory. */
  | 'NOT_A_DIRECTORY'
  /** Something live is already mounted on the mountpoint. */
  | 'MOUNTPOINT_BUSY'
  /** The mountpoint directory has entries that the mount would hide. */
  | 'MOUNTPOINT_NOT_EMPTY'
  /** The mountpoint cannot be inspected or created (EACCES, EROFS: a read-only filesystem, ...). */
  | 'MOUNTPOINT_UNUSABLE'
  /** A stale FUSE mount was found and could not be detached. */
  | 'STALE_MOUNT'
  /** mount(2) failed, or the connection ended before FUSE_INIT. */
  | 'MOUNT_FAILED'
  /** The kernel's FUSE protocol is too old (FUSE_INIT refused). */
  | 'FUSE_PROTOCOL'
  /** mount() after close(). */
  | 'CLOSED';

export class FsMountError extends Error {
  readonly code: FsMountErrorCode;

  constructor(code: FsMountErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FsMountError';
    this.code = code;
  }
}

/**
 * The `code` of a Node system error, or undefined. Duck-typed, not `instanceof Error`: errors made
 * by Node's core come from another realm under jest's sandbox.
 */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}
