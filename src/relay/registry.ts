/**
 * The registrants: the patch's `proclist` (struct rfork_proclist, kernel/relay_fork.c, 2005),
 * held as pidfds rather than bare numbers.
 *
 * The patch stored a pid and looked it up again with find_task_by_pid on every fork, so once a
 * registrant died and its pid was reused, a stranger received the signals. A pidfd names one
 * task for its whole life: after the task is reaped, pidfd_send_signal fails with ESRCH even if
 * the number has been given to a new process. pidfd_open(PIDFD_THREAD) (Linux 6.9) accepts any
 * task id, a thread's as well as a process's, and makes pidfd_send_signal queue the signal on
 * that very task, as the patch's send_sig_info did (thread-directed, private pending set).
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import {
  close,
  Errno,
  isSyscallError,
  pidfdOpen,
  PIDFD_THREAD,
  poll,
  POLLIN,
  syscallError,
} from '../native/libc';
import { POLLFD } from '../native/structs';

/** Why a registrant left: the user wrote "-id", the task exited (its pidfd polled readable, in the
 * receive worker's epoll set or here; or an exit event on the library's main-thread path), or
 * the kernel no longer knows it (ESRCH from pidfd_send_signal). */
export type RemovalReason = 'written' | 'exited' | 'gone';

/** Per-registrant delivery counters (mutated in place by the relay's hot path). */
export interface DeliveryCounters {
  /** Signals the kernel queued. */
  sent: number;
  /** Signals refused with EAGAIN: the registrant's RT signal queue (RLIMIT_SIGPENDING) was full. */
  lost: number;
  /** Signals refused with any other errno (see lastErrno). */
  failed: number;
  /** The last errno other than EAGAIN/ESRCH, 0 if none. */
  lastErrno: number;
}

export interface Registrant {
  /** The task id written to `processes` (a process id or a thread id). */
  readonly id: number;
  /** pidfd_open(id, PIDFD_THREAD), owned by the registry. */
  readonly pidfd: number;
  /** /proc/<id>/comm at registration ('' if it could not be read). */
  readonly comm: string;
  readonly counters: DeliveryCounters;
}

export interface RegisteredEvent {
  id: number;
  comm: string;
}

export interface UnregisteredEvent {
  id: number;
  comm: string;
  reason: RemovalReason;
  counters: Readonly<DeliveryCounters>;
}

export interface RegistryEvents {
  registered: [event: RegisteredEvent];
  unregistered: [event: UnregisteredEvent];
}

export type RegisterOutcome = 'registered' | 'already' | 'no-such-task';
export type UnregisterOutcome = 'unregistered' | 'not-registered';

const PID_MAX_PATH = '/proc/sys/kernel/pid_max';

const POLLFD_SIZE = POLLFD.SIZE;
const POLLFD_FD = POLLFD.FD;
const POLLFD_EVENTS = POLLFD.EVENTS;
const POLLFD_REVENTS = POLLFD.REVENTS;

/**
 * What the relay's fast path (src/relay/forkTable.ts) needs from the registry: to take a new
 * registrant into its shared table (false: no room, the registration fails with ENOSPC), and to
 * release a removed registrant's pidfd itself, because the receive worker may still be sending
 * to it. Without hooks a removed pidfd is closed at once.
 */
export interface RegistryHooks {
  admit?(registrant: Registrant): boolean;
  release?(registrant: Registrant): void;
}

/**
 * PID_MAX_LIMIT on 64-bit kernels (include/linux/threads.h: 4 * 1024 * 1024), the ceiling of
 * /proc/sys/kernel/pid_max: no task id is above it. Ids between pid_max and this are left to
 * pidfd_open (ESRCH), so no write reads pid_max, and a pid_max raised at run time is honoured.
 */
export const PID_MAX_LIMIT = 4 * 1024 * 1024;

/** The kernel's pid_max: ids above it name no task (kernel/pid.c allocates below it). */
export function readPidMax(): number {
  return Number.parseInt(fs.readFileSync(PID_MAX_PATH, 'latin1'), 10);
}

function readComm(id: number): string {
  try {
    return fs.readFileSync(`/proc/${id}/comm`, 'latin1').replace(/\n$/, '');
  } catch {
    return '';
  }
}

/**
 * Fails, with one line saying what to do, on a kernel whose pidfd_open lacks PIDFD_THREAD
 * (Linux < 6.9): there every registration would fail with EINVAL and read as "no such task", and
 * the relay would silently register nobody.
 */
export function checkPidfdThreadSupport(): void {
  let pidfd: number;
  try {
    pidfd = pidfdOpen(process.pid, PIDFD_THREAD);
  } catch (err) {
    if (isSyscallError(err, 'EINVAL') || isSyscallError(err, 'ENOSYS')) {
      throw new Error(
        `this kernel's pidfd_open() does not take PIDFD_THREAD (${err.code}): relayfork needs Linux 6.9 or later to hold a handle on every registrant`,
        { cause: err },
      );
    }
    throw err;
  }
  close(pidfd);
}

export class Registry extends EventEmitter<RegistryEvents> {
  /** Oldest first; the relay walks it backwards so delivery is newest first, like the patch. */
  private readonly order: Registrant[] = [];
  private readonly byId = new Map<number, Registrant>();
  /** One pollfd reused for single-pidfd checks. */
  private readonly onePollFd = Buffer.alloc(POLLFD_SIZE);
  private closed = false;

  constructor(private readonly hooks: RegistryHooks = {}) {
    super();
  }

  get size(): number {
    return this.order.length;
  }

  /** Registrants, oldest first. Read-only view for the relay's delivery loop; do not keep it. */
  get list(): readonly Registrant[] {
    return this.order;
  }

  /** The registered ids, newest first (the patch's list_add at the head of proclist). */
  ids(): number[] {
    const ids: number[] = [];
    for (let i = this.order.length - 1; i >= 0; i--) ids.push(this.order[i].id);
    return ids;
  }

  has(id: number): boolean {
    return this.byId.has(id);
  }

  get(id: number): Registrant | undefined {
    return this.byId.get(id);
  }

  /**
   * `rfd_proclist_store`'s "add" branch. 'already' when a live registrant has that id;
   * 'no-such-task' when the id is not a positive integer, is above pid_max, or pidfd_open fails
   * with ESRCH/EINVAL, or the task has already exited (a zombie cannot take signals and will
   * never send the exit event that would remove it). A registrant with the same id whose task
   * has exited but was not removed yet is replaced: the id now names somebody else.
   * Other pidfd_open failures (EMFILE, ENOMEM...) are thrown.
   */
  register(id: number): RegisterOutcome {
    if (this.closed) throw new Error('Registry.register: the registry is closed');
    if (!Number.isSafeInteger(id) || id <= 0 || id > PID_MAX_LIMIT) return 'no-such-task';
    const existing = this.byId.get(id);
    if (existing !== undefined) {
      if (!this.hasExited(existing)) return 'already';
      this.remove(existing, 'exited');
    }
    let pidfd: number;
    try {
      pidfd = pidfdOpen(id, PIDFD_THREAD);
    } catch (err) {
      if (isSyscallError(err, 'ESRCH') || isSyscallError(err, 'EINVAL')) return 'no-such-task';
      throw err;
    }
    if (this.pollExited(pidfd)) {
      close(pidfd);
      return 'no-such-task';
    }
    const registrant: Registrant = {
      id,
      pidfd,
      comm: readComm(id),
      counters: { sent: 0, lost: 0, failed: 0, lastErrno: 0 },
    };
    if (this.hooks.admit && !this.hooks.admit(registrant)) {
      close(pidfd);
      throw syscallError('register', Errno.ENOSPC);
    }
    this.order.push(registrant);
    this.byId.set(id, registrant);
    this.emit('registered', { id, comm: registrant.comm });
    return 'registered';
  }

  /** `rfd_proclist_store`'s "remove" branch. */
  unregister(id: number): UnregisterOutcome {
    const registrant = this.byId.get(id);
    if (registrant === undefined) return 'not-registered';
    this.remove(registrant, 'written');
    return 'unregistered';
  }

  /**
   * Remove one registrant (no-op if it is no longer registered) and close its pidfd. Used by the
   * relay for ESRCH ('gone') and confirmed exits ('exited').
   */
  remove(registrant: Registrant, reason: RemovalReason): void {
    if (this.byId.get(registrant.id) !== registrant) return;
    this.byId.delete(registrant.id);
    const index = this.order.lastIndexOf(registrant);
    if (index >= 0) this.order.splice(index, 1);
    this.release(registrant);
    this.emit('unregistered', {
      id: registrant.id,
      comm: registrant.comm,
      reason,
      counters: { ...registrant.counters },
    });
  }

  /**
   * True once the registrant's task has exited: its pidfd polls readable (pidfd_poll in
   * fs/pidfs.c, Linux 6.9+: for a PIDFD_THREAD pidfd, EPOLLIN once the task has an exit_state,
   * EPOLLIN | EPOLLHUP once it is reaped). A zombie counts as exited: it never takes a signal.
   */
  hasExited(registrant: Registrant): boolean {
    return this.pollExited(registrant.pidfd);
  }

  /**
   * Remove every registrant whose task has exited, with one poll(2) over all pidfds. Returns
   * how many were removed. Called before rendering `processes` and after the proc connector
   * reported lost events, so a registrant whose exit event was lost still disappears.
   */
  pruneExited(): number {
    const n = this.order.length;
    if (n === 0) return 0;
    const fds = Buffer.alloc(n * POLLFD_SIZE);
    const snapshot = this.order.slice();
    for (let i = 0; i < n; i++) {
      fds.writeInt32LE(snapshot[i].pidfd, i * POLLFD_SIZE + POLLFD_FD);
      fds.writeInt16LE(POLLIN, i * POLLFD_SIZE + POLLFD_EVENTS);
    }
    if (poll(fds, 0) === 0) return 0;
    let removed = 0;
    for (let i = 0; i < n; i++) {
      if ((fds.readInt16LE(i * POLLFD_SIZE + POLLFD_REVENTS) & POLLIN) !== 0) {
        this.remove(snapshot[i], 'exited');
        removed++;
      }
    }
    return removed;
  }

  /** Close every pidfd and forget every registrant, without events. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const registrant of this.order) this.release(registrant);
    this.order.length = 0;
    this.byId.clear();
  }

  private release(registrant: Registrant): void {
    if (this.hooks.release) this.hooks.release(registrant);
    else close(registrant.pidfd);
  }

  private pollExited(pidfd: number): boolean {
    const fds = this.onePollFd;
    fds.writeInt32LE(pidfd, POLLFD_FD);
    fds.writeInt16LE(POLLIN, POLLFD_EVENTS);
    fds.writeInt16LE(0, POLLFD_REVENTS);
    return poll(fds, 0) > 0 && (fds.readInt16LE(POLLFD_REVENTS) & POLLIN) !== 0;
  }
}
