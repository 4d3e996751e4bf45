/**
 * A FUSE mount that outlives its server's restarts, through systemd's fd store (issue 9 §1):
 * - at start, a connection systemd passes back (LISTEN_FDS) is adopted instead of mounting anew,
 *   so callers of the mount never see it go (no ENOTCONN, no empty directory);
 * - once mounted, the connection's fd goes to the store (FDSTORE=1, FDNAME=<what it serves>);
 * - on SIGTERM, the mount is left to the next start when systemd is restarting the unit, and
 *   unmounted (and the fd taken out of the store) when it is stopping it. A crash or kill -9 needs
 *   nothing: the store keeps the fd through Restart=.
 * It knows the tree only by this small interface (src/fs's AttributeFs has it), so the daemon and
 * the systemd test probe share it.
 */
import { close as closeFd } from '../native/libc';
import { takeListenFds } from './listenFds';
import type { SystemdNotifier } from './notify';
import { ownUnit, restartPending, type RestartCheck } from './restartPending';

export interface HandedOver {
  fd: number;
  name: string;
}

/** What a FUSE tree offers for a hand-over (AttributeFs). */
export interface HandOverableTree {
  adopt(handover: HandedOver): Promise<void>;
  handover(): HandedOver | undefined;
  leaveMounted(): Promise<void>;
  close(): Promise<void>;
}

export interface MountFdStoreOptions {
  /** Send the connection to the store (--fd-store). Adoption happens either way. */
  store: boolean;
  /** Is this passed fd name one of our connections (parseHandoverName)? */
  isConnectionName(name: string): boolean;
  /** Is this error a refusal to adopt (AttributeFs's AdoptRefused), not a failure? */
  isRefusal(err: unknown): boolean;
  info(message: string): void;
  warn(message: string): void;
  /** The restart check; systemctl list-jobs by default. */
  restartPending?: (unit: string) => Promise<RestartCheck>;
}

export class MountFdStore {
  /** The FDNAME under which systemd keeps our connection. */
  private storedName: string | undefined;

  constructor(
    private readonly notifier: SystemdNotifier,
    private readonly options: MountFdStoreOptions,
  ) {}

  /**
   * Adopt the connection systemd passed back, if any and if the tree accepts it; close every
   * other passed fd. true when the tree now serves an adopted mount.
   */
  async adoptPassed(tree: HandOverableTree): Promise<boolean> {
    const { options } = this;
    const { fds, problem } = takeListenFds();
    if (problem !== undefined) options.warn(`fds passed by systemd: ${problem}`);
    let adopted = false;
    for (const { fd, name } of fds) {
      if (adopted || !options.isConnectionName(name)) {
        options.warn(`closing fd ${fd} (${name}) passed by systemd: not a FUSE connection of ours`);
        try {
          closeFd(fd);
        } catch {
          // Already closed.
        }
        continue;
      }
      try {
        await tree.adopt({ fd, name });
        adopted = true;
        this.storedName = name;
      } catch (err) {
        if (!options.isRefusal(err)) throw err;
        options.warn(
          `not taking over the FUSE connection systemd kept (${name}): ${(err as Error).message}; mounting anew`,
        );
        this.notifier.removeStoredFds(name);
      }
    }
    return adopted;
  }

  /** Hand the mounted tree's connection to the store (with --fd-store, unless adopted: it is there). */
  store(tree: HandOverableTree): void {
    const { options } = this;
    if (!options.store || this.storedName !== undefined) return;
    const handover = tree.handover();
    if (handover === undefined) return;
    if (!this.notifier.enabled) {
      options.warn(
        '--fd-store needs systemd (NOTIFY_SOCKET is not set): the mount will not survive a restart',
      );
      return;
    }
    if (this.notifier.storeFds(handover.name, [handover.fd])) {
      this.storedName = handover.name;
      options.info(
        `the FUSE connection is in systemd's fd store (${handover.name}): a restart keeps the mount`,
      );
    } else {
      options.warn('could not hand the FUSE connection to systemd: a restart will remount');
    }
  }

  /**
   * Shutdown: leave the mount to the next start when systemd is restarting this unit and holds
   * the connection; otherwise take it out of the store and unmount.
   */
  async stop(tree: HandOverableTree): Promise<'left' | 'unmounted'> {
    const name = this.storedName;
    if (name !== undefined) {
      const unit = ownUnit();
      const check: RestartCheck =
        unit === undefined
          ? { restarting: false, why: 'this process runs in no systemd service' }
          : await (this.options.restartPending ?? restartPending)(unit);
      if (check.restarting) {
        await tree.leaveMounted();
        return 'left';
      }
      // Said before unmounting: when a restart remounted after all, this line tells why.
      this.options.info(`stopping, not restarting (${check.why}): unmounting`);
      this.notifier.removeStoredFds(name);
      this.storedName = undefined;
    }
    await tree.close();
    return 'unmounted';
  }
}
