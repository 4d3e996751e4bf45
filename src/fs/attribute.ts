/**
 * What a file of the FUSE tree must supply: the two halves of a sysfs attribute
 * (`struct attribute`'s show/store pair in the 2005 patch, kernel 2.6.11 sysfs).
 *
 * The tree owns the sysfs mechanics (rendering once per open at offset 0, the 4095-byte store
 * limit, C-string truncation at the first NUL, returning strlen); an attribute owns only meaning.
 */
export interface Attribute {
  /** Render the whole file. Called when a read starts at offset 0. */
  show(): string;
  /**
   * Handle one write(2): `text` is the written bytes cut at the first NUL and at 4095 bytes,
   * decoded as latin1 (one char per byte). 'accepted' makes the write return the string's
   * length, as the patch's `return strlen(buf)`; 'rejected' (the text is not acceptable) makes
   * it fail with EINVAL; a StoreFailure (the text was fine, something else was not) makes it
   * fail with that errno. `caller` is who wrote, when the FUSE layer knows it.
   */
  store(text: string, caller?: Caller): StoreOutcome;
  /**
   * The file's permission bits (0..0o777), owner and group root. Default 0o644: everyone reads,
   * only root writes. The kernel enforces them (default_permissions): 0o666 lets every user
   * reach store(), which then sees who wrote in `caller`.
   */
  mode?: number;
}

/** The process that made a request (the FUSE request header's pid, uid and gid). */
export interface Caller {
  /**
   * The id of the calling *thread* (the kernel sends task_pid, not the tgid: fs/fuse/dev.c
   * fuse_force_creds), in the mount's pid namespace; for a single-threaded writer its pid.
   */
  pid: number;
  /** The caller's fsuid and fsgid. */
  uid: number;
  gid: number;
}

/** A store that failed through no fault of the text: the write(2) fails with `errno`. */
export interface StoreFailure {
  errno: StoreErrno;
}

/** The errnos a store may fail with besides EINVAL (Node's codes, as in `os.constants.errno`). */
export type StoreErrno = 'EACCES' | 'EPERM' | 'EMFILE' | 'ENOSPC' | 'ENOMEM' | 'ESHUTDOWN' | 'EIO';

export type StoreOutcome = 'accepted' | 'rejected' | StoreFailure;
