/**
 * sd_notify(3) without a native build: one AF_UNIX datagram per message to $NOTIFY_SOCKET, sent
 * through the libc boundary (src/native/libc.ts).
 *
 * The protocol (systemd 252, sd_notify(3) and src/libsystemd/sd-daemon/sd-daemon.c):
 * - NOTIFY_SOCKET is an absolute path, or an abstract address written with a leading '@' that
 *   stands for the NUL byte. The address length passed to sendto(2) covers sun_family plus the
 *   path bytes: for a path, its terminating NUL too; for an abstract name, no trailing NUL (an
 *   abstract name is exactly the bytes given, so a trailing NUL would name another socket).
 * - A message is newline-separated VAR=VALUE lines: READY=1, STATUS=..., STOPPING=1,
 *   WATCHDOG=1. With NotifyAccess=main systemd accepts them only from the unit's main pid, which
 *   is this process (koffi calls run in it, not in a helper).
 * - WATCHDOG_USEC is the watchdog interval; WATCHDOG_PID, when set, names the one process it is
 *   meant for, so a child that inherited the environment does not ping for its parent.
 *
 * Outside systemd (NOTIFY_SOCKET unset) every method does nothing. A failed send never throws:
 * the daemon must not die because systemd is slow or gone; it returns false and is counted.
 */
import {
  AF_UNIX,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  close as closeFd,
  sendWithFds,
  sendto,
  socket,
} from '../native/libc';
import { SOCKADDR_UN } from '../native/structs';

/** struct sockaddr_un, defined in src/native/structs.ts. */
const SOCKADDR_UN_FAMILY_OFFSET = SOCKADDR_UN.FAMILY;
const SOCKADDR_UN_PATH_OFFSET = SOCKADDR_UN.PATH;
const SOCKADDR_UN_PATH_SIZE = SOCKADDR_UN.PATH_SIZE;

/**
 * Encode $NOTIFY_SOCKET as a struct sockaddr_un of exactly the length sendto(2) must be given,
 * or return a reason why it cannot be used.
 */
export function notifySocketAddress(value: string): Buffer | string {
  const abstract = value.startsWith('@');
  if (!abstract && !value.startsWith('/')) {
    return `NOTIFY_SOCKET=${value} is neither an absolute path nor an abstract '@' address`;
  }
  const name = Buffer.from(value, 'utf8');
  if (abstract) name[0] = 0;
  // A path needs room for its NUL inside sun_path; an abstract name may fill sun_path entirely.
  const pathBytes = abstract ? name.length : name.length + 1;
  if (name.length < 2 || pathBytes > SOCKADDR_UN_PATH_SIZE) {
    return `NOTIFY_SOCKET=${value} does not fit struct sockaddr_un (${SOCKADDR_UN_PATH_SIZE} bytes)`;
  }
  const addr = Buffer.alloc(SOCKADDR_UN_PATH_OFFSET + pathBytes);
  addr.writeUInt16LE(AF_UNIX, SOCKADDR_UN_FAMILY_OFFSET);
  name.copy(addr, SOCKADDR_UN_PATH_OFFSET);
  return addr;
}

/** STATUS= is one line: a newline in the text would start a new VAR=VALUE assignment. */
function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}

export class SystemdNotifier {
  /** Datagrams that could not be sent (systemd gone, queue full, socket refused). */
  failedSends = 0;
  private fd: number | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    private readonly address: Buffer | undefined,
    private readonly watchdogUsec: number | undefined,
    /** Why this notifier does nothing, when it does nothing (for a debug log line). */
    readonly disabledReason: string | undefined,
  ) {}

  /**
   * The notifier systemd asked for through the environment, or a no-op one when NOTIFY_SOCKET is
   * unset or unusable. Never throws.
   */
  static fromEnvironment(env: NodeJS.ProcessEnv = process.env): SystemdNotifier {
    const watchdogUsec = parseWatchdog(env);
    const value = env.NOTIFY_SOCKET;
    if (value === undefined || value === '') {
      return new SystemdNotifier(undefined, watchdogUsec, 'NOTIFY_SOCKET is not set');
    }
    const address = notifySocketAddress(value);
    if (typeof address === 'string') return new SystemdNotifier(undefined, watchdogUsec, address);
    return new SystemdNotifier(address, watchdogUsec, undefined);
  }

  /** True when messages go somewhere (started by systemd with Type=notify). */
  get enabled(): boolean {
    return this.address !== undefined && !this.closed;
  }

  /** Send raw VAR=VALUE lines. Returns true when the datagram was handed to the kernel. */
  notify(message: string): boolean {
    if (this.address === undefined || this.closed) return false;
    try {
      this.fd ??= socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      // Non-blocking: a full receive queue on systemd's side (EAGAIN) loses this one message
      // rather than stalling the daemon's main thread, which also serves FUSE requests.
      sendto(this.fd, Buffer.from(message, 'utf8'), this.address);
      return true;
    } catch {
      this.failedSends++;
      return false;
    }
  }

  /**
   * FDSTORE=1 with FDNAME=`name`: hand systemd duplicates of `fds` to keep for this service and
   * pass back to its next start (sd_pid_notify_with_fds(3); LISTEN_FDS / LISTEN_FDNAMES, see
   * ./listenFds.ts). systemd accepts them only with FileDescriptorStoreMax= > 0 in the unit, and
   * drops one by itself once it reports POLLERR or POLLHUP (systemd 252 src/core/service.c
   * on_fd_store_io), as /dev/fuse does when its connection ends. Returns true when sent.
   */
  storeFds(name: string, fds: number[]): boolean {
    if (!isValidFdName(name)) throw new TypeError(`not a valid FDNAME: ${JSON.stringify(name)}`);
    if (this.address === undefined || this.closed) return false;
    try {
      this.fd ??= socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      sendWithFds(this.fd, Buffer.from(`FDSTORE=1\nFDNAME=${name}`, 'utf8'), this.address, fds);
      return true;
    } catch {
      this.failedSends++;
      return false;
    }
  }

  /** FDSTOREREMOVE=1: systemd closes the fds it keeps under `name`. */
  removeStoredFds(name: string): boolean {
    if (!isValidFdName(name)) throw new TypeError(`not a valid FDNAME: ${JSON.stringify(name)}`);
    return this.notify(`FDSTOREREMOVE=1\nFDNAME=${name}`);
  }

  /** READY=1: start-up finished (the mount is live and the proc connector proved itself). */
  ready(status?: string): boolean {
    return this.notify(status === undefined ? 'READY=1' : `READY=1\nSTATUS=${oneLine(status)}`);
  }

  /** STATUS=: the one line `systemctl status` shows under the unit. */
  status(text: string): boolean {
    return this.notify(`STATUS=${oneLine(text)}`);
  }

  /** STOPPING=1: shutdown has begun. */
  stopping(status?: string): boolean {
    return this.notify(
      status === undefined ? 'STOPPING=1' : `STOPPING=1\nSTATUS=${oneLine(status)}`,
    );
  }

  /** WATCHDOG=1: one keep-alive ping. */
  watchdog(): boolean {
    return this.notify('WATCHDOG=1');
  }

  /**
   * The watchdog interval systemd enforces on this process (WatchdogSec=), in milliseconds, or
   * undefined when there is none or it is meant for another pid (WATCHDOG_PID).
   */
  watchdogIntervalMs(): number | undefined {
    return this.watchdogUsec === undefined ? undefined : this.watchdogUsec / 1000;
  }

  /**
   * Ping WATCHDOG=1 at half the interval, as sd_watchdog_enabled(3) recommends (only when
   * `healthy` resolves true, if given), from an
   * unref'd timer (it never keeps the process alive). Returns the ping period in ms, or
   * undefined when there is no watchdog or no socket. Idempotent.
   */
  startWatchdog(healthy?: () => Promise<boolean>): number | undefined {
    const interval = this.watchdogIntervalMs();
    if (interval === undefined || !this.enabled) return undefined;
    const period = Math.max(1, Math.floor(interval / 2));
    if (this.watchdogTimer === undefined) {
      let checking = false;
      this.watchdogTimer = setInterval(() => {
        if (healthy === undefined) {
          this.watchdog();
          return;
        }
        // WATCHDOG=1 means "healthy", not "the event loop turns": no ping unless the check
        // passes, so systemd restarts a daemon whose parts have stalled.
        if (checking) return;
        checking = true;
        healthy()
          .then((ok) => {
            if (ok && !this.closed) this.watchdog();
          })
          .catch(() => undefined)
          .finally(() => (checking = false));
      }, period);
      this.watchdogTimer.unref();
    }
    return period;
  }

  /** Stop the watchdog and close the socket. Idempotent; later sends do nothing. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watchdogTimer !== undefined) clearInterval(this.watchdogTimer);
    this.watchdogTimer = undefined;
    if (this.fd !== undefined) {
      const fd = this.fd;
      this.fd = undefined;
      try {
        closeFd(fd);
      } catch {
        // close(2) fails only for a bad fd; there is nothing left to undo.
      }
    }
  }
}

/**
 * An FDNAME systemd accepts (fdname_is_valid, systemd 252 src/basic/fd-util.c): 1..255 printable
 * ASCII characters, no ':' (the separator of LISTEN_FDNAMES).
 */
export function isValidFdName(name: string): boolean {
  return /^[\x21-\x39\x3b-\x7e]{1,255}$/.test(name);
}

/** WATCHDOG_USEC as a positive integer, if it is meant for this process (sd_watchdog_enabled). */
function parseWatchdog(env: NodeJS.ProcessEnv): number | undefined {
  const usec = env.WATCHDOG_USEC;
  if (usec === undefined || !/^\d+$/.test(usec)) return undefined;
  const value = Number(usec);
  if (!Number.isSafeInteger(value) || value <= 0) return undefined;
  const pid = env.WATCHDOG_PID;
  if (pid !== undefined && pid !== '' && Number(pid) !== process.pid) return undefined;
  return value;
}
