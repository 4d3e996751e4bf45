/**
 * The two files of /sys/relayfork as attributes: the meaning of `processes` and `signal`
 * (rfd_proclist_store/show, rfd_signal_store/show of the 2005 patch, kernel/relay_fork.c).
 * The FUSE tree (src/fs) owns the sysfs mechanics; these own only the rules.
 */
import type { Attribute, StoreOutcome } from '../fs/attribute';
import type { Logger } from '../log';
import {
  isAcceptedSignal,
  isUnregisterRequest,
  parsePatchNumber,
  renderProcessList,
  renderSignal,
} from './patchRules';
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
  const ignored: StoreOutcome = strict ? 'rejected' : 'accepted';

  const processes: Attribute = {
    show(): string {
      // A registrant whose exit event was missed still disappears from the listing.
      relay.registry.pruneExited();
      return renderProcessList(relay.registry.ids());
    },
    store(text: string): StoreOutcome {
      const id = parsePatchNumber(text);
      if (id === 0) return ignored;
      if (isUnregisterRequest(text)) {
        const registrant = relay.registry.get(id);
        if (relay.registry.unregister(id) === 'not-registered') return ignored;
        logger?.info(`pid ${id} (${registrant?.comm ?? ''}) unregistered`);
        return 'accepted';
      }
      let outcome: RegisterOutcome;
      try {
        outcome = relay.registry.register(id);
      } catch (err) {
        // Resource exhaustion (EMFILE, ENOMEM from pidfd_open): the patch's kmalloc failure
        // returned -ENOMEM; the write fails and the daemon keeps running.
        logger?.error(
          `registering pid ${id} failed: ${err instanceof Error ? err.message : String(err)}` +
            ' (raise the daemon\'s open-file limit, "ulimit -n", if it says EMFILE)',
        );
        return 'rejected';
      }
      switch (outcome) {
        case 'registered':
          logger?.info(`pid ${id} (${relay.registry.get(id)?.comm ?? ''}) registered`);
          return 'accepted';
        case 'already':
          return 'accepted';
        case 'no-such-task':
          return ignored;
      }
    },
  };

  const signal: Attribute = {
    show(): string {
      return renderSignal(relay.signal);
    },
    store(text: string): StoreOutcome {
      const n = parsePatchNumber(text);
      if (!isAcceptedSignal(n)) return ignored;
      const previous = relay.signal;
      relay.setSignal(n);
      if (n !== previous) logger?.info(`signal changed from ${previous} to ${n}`);
      return 'accepted';
    },
  };

  return { processes, signal };
}
