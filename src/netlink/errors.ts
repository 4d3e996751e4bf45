/**
 * Errors a user can hit when subscribing to the proc connector, each as one line: what is wrong
 * and what to do (forkstat style: the call, the errno, the advice).
 */
import fs from 'node:fs';
import { isSyscallError } from '../native/libc';

export type ProcConnectorErrorCode =
  /** The kernel has no connector / proc events (CONFIG_CONNECTOR, CONFIG_PROC_EVENTS). */
  | 'EPROTONOSUPPORT'
  /**
   * Not allowed: kernels before 6.6 require CAP_NET_ADMIN to listen; some kernels refuse the
   * bind to a process outside the initial user namespace.
   */
  | 'EPERM'
  | 'EACCES'
  /** Not in the initial network namespace: the connector's kernel socket lives only there. */
  | 'ECONNREFUSED'
  /**
   * The silent case: the kernel accepted our messages but sends us no events, because we are
   * outside the initial pid or user namespace (cn_proc_mcast_ctl() ignores such listeners).
   */
  | 'ENOEVENTS'
  /** A caller mistake (bad option, wrong state). */
  | 'EINVAL'
  /** Anything else: the code of the failed call (EMFILE, ENOMEM, ...). */
  | (string & {});

export class ProcConnectorError extends Error {
  readonly code: ProcConnectorErrorCode;
  /** The call that failed, when one did (socket, bind, send, setsockopt...). */
  readonly syscall?: string;

  constructor(
    code: ProcConnectorErrorCode,
    message: string,
    options?: { syscall?: string; cause?: unknown },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ProcConnectorError';
    this.code = code;
    if (options?.syscall !== undefined) this.syscall = options.syscall;
  }
}

/** The fix for the namespace cases, in one place so every message gives the same advice. */
export const NAMESPACE_FIX =
  'run relayfork on the host, or in Docker with --pid=host --net=host (and no user namespace)';

/**
 * Whether the text of a /proc/<pid>/uid_map is the initial user namespace's: one line mapping
 * the whole id range onto itself, "0 0 4294967295" (init_user_ns, kernel/user_namespace.c). A
 * child user namespace (unshare --user, a rootless or userns-remapped container) maps less.
 */
export function isInitialUidMap(text: string): boolean {
  const lines = text.trim().split('\n');
  if (lines.length !== 1) return false;
  const [inside, outside, count, ...rest] = lines[0].trim().split(/\s+/);
  return inside === '0' && outside === '0' && count === '4294967295' && rest.length === 0;
}

/** Whether this process is in the initial user namespace (true where that cannot be read). */
export function inInitialUserNamespace(): boolean {
  try {
    return isInitialUidMap(fs.readFileSync('/proc/self/uid_map', 'utf8'));
  } catch {
    return true;
  }
}

/**
 * The silent namespace case. `symptom` says what did not happen, e.g. "the kernel did not answer
 * our listen request within 1000 ms".
 */
export function noEventsError(symptom: string): ProcConnectorError {
  return new ProcConnectorError(
    'ENOEVENTS',
    `${symptom}: this process is outside the initial pid or user namespace, where the kernel ` +
      `ignores proc connector listeners; ${NAMESPACE_FIX}`,
  );
}

/**
 * Turn an error from a libc call made while opening the connector into a ProcConnectorError with
 * the cause and the fix. Errors that are already ProcConnectorErrors pass through.
 */
export function toProcConnectorError(
  err: unknown,
  initialUserNamespace: () => boolean = inInitialUserNamespace,
): ProcConnectorError {
  if (err instanceof ProcConnectorError) return err;
  if (isSyscallError(err)) {
    const call = `${err.syscall}() failed with ${err.code}`;
    switch (err.code) {
      case 'EPROTONOSUPPORT':
        return new ProcConnectorError(
          err.code,
          `the kernel has no proc connector: socket(AF_NETLINK, NETLINK_CONNECTOR) failed with ` +
            `EPROTONOSUPPORT; use a kernel built with CONFIG_CONNECTOR=y and CONFIG_PROC_EVENTS=y`,
          { syscall: err.syscall, cause: err },
        );
      case 'EPERM':
      case 'EACCES':
        if (!initialUserNamespace()) {
          // Root in a child user namespace is not root to the connector: kernels either refuse
          // the bind (netlink_bind() without CAP_NET_ADMIN over the initial namespace, seen on
          // Linux 6.18.44 builds of this machine kind from 2026-12) or take it and ignore the
          // listen (ENOEVENTS). "Run as root" would be no help here.
          return new ProcConnectorError(
            err.code,
            `the kernel refused to let this process listen to the proc connector: ${call}; ` +
              `this process is outside the initial user namespace, where the kernel refuses or ` +
              `ignores proc connector listeners; ${NAMESPACE_FIX}`,
            { syscall: err.syscall, cause: err },
          );
        }
        return new ProcConnectorError(
          err.code,
          `no permission to listen to the proc connector: ${call}; run as root or with ` +
            `CAP_NET_ADMIN (required on kernels before 6.6)`,
          { syscall: err.syscall, cause: err },
        );
      case 'ECONNREFUSED':
        return new ProcConnectorError(
          err.code,
          `the proc connector refused the subscription: ${call} because this process is not in ` +
            `the initial network namespace; ${NAMESPACE_FIX}`,
          { syscall: err.syscall, cause: err },
        );
      default:
        return new ProcConnectorError(err.code, `proc connector: ${err.message}`, {
          syscall: err.syscall,
          cause: err,
        });
    }
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ProcConnectorError('EUNKNOWN', `proc connector: ${message}`, { cause: err });
}

/**
 * One line for any error from ProcConnector.open()/selfTest() (or its 'error' event), for the
 * daemon's log and `relayfork watch`: what is wrong and what to do.
 */
export function describeProcConnectorError(err: unknown): string {
  return toProcConnectorError(err).message.replace(/\s+/g, ' ').trim();
}
