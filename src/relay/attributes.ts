/**
 * The two files of /sys/relayfork as attributes: the meaning of `processes` and `signal`
 * (rfd_proclist_store/show, rfd_signal_store/show of the 2005 patch, kernel/relay_fork.c).
 * The FUSE tree (src/fs) owns the sysfs mechanics; these own only the rules.
 */
import fs from 'node:fs';
import type { Attribute, Caller, StoreOutcome } from '../fs/attribute';
import type { Logger } from '../log';
import {
  isAcceptedSignal,
  isUnregisterRequest,
  parsePatchNumber,
  renderProcessList,
  renderSignal,
} from './patchRules';
import { readTgid } from './procStat';
import type { Relay } from './relay';
import type { RegisterOutcome } from './registry';

export interface PatchAttributeOptions {
  /**
   * Reject (EINVAL) the writes the patch silently ignored: no number or 0, no such task,
   * unregistering an id that is not registered, a signal out of 33..63.
   *
   * Re-registering an id that is already registered is accepted even in strict mode: the
   * request's intent ("this task is registered") holds afterwards, it is idempotent like
   * `echo 40 > signal` twice, and a program that registers itself defensively should not fail.
   */
  strict?: boolean;
  /** Registrations, unregistrations (with the command name) and signal changes, at info. */
  logger?: Logger;
  /**
   * True once the daemon is shutting down: writes then fail with ESHUTDOWN, the write's true
   * cause, rather than with whatever the half-closed registry would make of them.
   */
  isShuttingDown?: () => boolean;
  /**
   * `processes` becomes writable by every user (mode 0666); a caller that is not root may
   * register or unregister only its own process or one of its own threads (anything else:
   * EACCES). Off by default: the patch's rule, root only. `signal` stays root's.
   */
  allowSelfRegister?: boolean;
  /** Called after the signal in effect changed (the daemon saves its state). */
  onSignalChanged?: (signal: number) => void;
}

/** A type alias, not an interface, so it is assignable to `Record<string, Attribute>`. */
export type PatchAttributes = {
  processes: Attribute;
  signal: Attribute;
};

export function createPatchAttributes(
  relay: Relay,
  options: PatchAttributeOptions = {},
): PatchAttributes {
  const strict = options.strict ?? false;
  const logger = options.logger;
  const isShuttingDown = options.isShuttingDown ?? (() => false);
  const allowSelfRegister = options.allowSelfRegister ?? false;

  /** A caller that is not root may name only a task of its own process. */
  function ownedByCaller(id: number, caller: Caller): boolean {
    const own = readTgid(caller.pid);
    return own !== undefined && readTgid(id) === own;
  }
  const ignored: StoreOutcome = strict ? 'rejected' : 'accepted';

  const processes: Attribute = {
    show(): string {
      // A registrant whose exit event was missed still disappears from the listing.
      relay.registry.pruneExited();
      return renderProcessList(relay.registry.ids());
    },
    mode: allowSelfRegister ? 0o666 : 0o644,
    store(text: string, caller?: Caller): StoreOutcome {
      if (isShuttingDown()) return { errno: 'ESHUTDOWN' };
      const unprivileged = caller !== undefined && caller.uid !== 0;
      if (unprivileged && !allowSelfRegister) return { errno: 'EACCES' };
      const id = parsePatchNumber(text);
      if (id === 0) return ignored;
      if (unprivileged && !ownedByCaller(id, caller)) {
        logger?.warn(
          `pid ${caller.pid}, uid ${caller.uid}, may not ${isUnregisterRequest(text) ? 'unregister' : 'register'} pid ${id}: not a task of its own process`,
        );
        return { errno: 'EACCES' };
      }
      const by = caller === undefined ? '' : ` by ${describeTask(caller.pid)}, uid ${caller.uid}`;
      if (isUnregisterRequest(text)) {
        const registrant = relay.registry.get(id);
        if (registrant === undefined || relay.registry.unregister(id) === 'not-registered') {
          return ignored;
        }
        const { sent, lost } = registrant.counters;
        logger?.info(
          `pid ${id} (${registrant.comm}) unregistered${by} (signals sent ${sent}, lost ${lost})`,
        );
        return 'accepted';
      }
      // The daemon's own process and threads: a signal the daemon sent itself would kill it (an
      // RT signal's default action) and leave a stale mount. The patch never met the case (the
      // kernel sent the signals); to the writer it is like a task that cannot be registered.
      if (isDaemonTask(id)) {
        logger?.warn(`pid ${id} is relayfork itself: not registered${by}`);
        return ignored;
      }
      let outcome: RegisterOutcome;
      try {
        outcome = relay.registry.register(id);
      } catch (err) {
        return registrationFailed(id, err);
      }
      if (unprivileged && outcome === 'registered' && !ownedByCaller(id, caller)) {
        // The id changed hands between the check and pidfd_open (it exited, its number was
        // reused): the pidfd names a stranger. Undo.
        relay.registry.unregister(id);
        return { errno: 'EACCES' };
      }
      switch (outcome) {
        case 'registered':
          logger?.info(`pid ${id} (${relay.registry.get(id)?.comm ?? ''}) registered${by}`);
          return 'accepted';
        case 'already':
          return 'accepted';
        case 'no-such-task':
          return ignored;
      }
    },
  };

  /**
   * Resource exhaustion from pidfd_open is not the writer's fault, so it is not EINVAL: the
   * write fails with the errno itself (the patch's kmalloc failure returned -ENOMEM likewise)
   * and the daemon keeps running; the log says what to raise.
   */
  function registrationFailed(id: number, err: unknown): StoreOutcome {
    if (isShuttingDown() || (err instanceof Error && /registry is closed/.test(err.message))) {
      return { errno: 'ESHUTDOWN' };
    }
    const code = (err as { code?: unknown } | null)?.code;
    const reason = err instanceof Error ? err.message : String(err);
    if (code === 'EMFILE' || code === 'ENFILE') {
      logger?.error(
        `registering pid ${id} failed: ${reason}: the daemon holds one pidfd per registrant and has reached its open-file limit; raise it (LimitNOFILE= in the unit, or ulimit -n)`,
      );
      return { errno: 'EMFILE' };
    }
    if (code === 'ENOMEM') {
      logger?.error(`registering pid ${id} failed: ${reason}: the kernel is out of memory`);
      return { errno: 'ENOMEM' };
    }
    logger?.error(`registering pid ${id} failed: ${reason}`);
    return { errno: 'EIO' };
  }

  const signal: Attribute = {
    show(): string {
      return renderSignal(relay.signal);
    },
    store(text: string, caller?: Caller): StoreOutcome {
      if (isShuttingDown()) return { errno: 'ESHUTDOWN' };
      if (caller !== undefined && caller.uid !== 0) return { errno: 'EACCES' };
      const n = parsePatchNumber(text);
      if (!isAcceptedSignal(n)) return ignored;
      const previous = relay.signal;
      relay.setSignal(n);
      if (n !== previous) {
        logger?.info(`signal changed from ${previous} to ${n}`);
        options.onSignalChanged?.(n);
      }
      return 'accepted';
    },
  };

  return { processes, signal };
}

/** True when `id` is a thread of this very process (its main thread included). */
function isDaemonTask(id: number): boolean {
  return id === process.pid || fs.existsSync(`/proc/self/task/${id}`);
}

/** "pid 311 (bash)" for a log line; the comm is escaped by the logger. */
function describeTask(pid: number): string {
  let comm = '';
  try {
    comm = fs.readFileSync(`/proc/${pid}/comm`, 'latin1').replace(/\n$/, '');
  } catch {
    // Gone already: the pid alone.
  }
  return `pid ${pid} (${comm})`;
}
