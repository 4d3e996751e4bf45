/**
 * The relayfork daemon: subscribes to the proc connector, mounts the patch's two files, and relays
 * every fork to the registrants. It wires src/netlink, src/fs and src/relay; the behaviour of each
 * lives in its folder.
 *
 * Start-up order (undone in reverse by shutdown):
 *   1. the proc connector: subscribed and self-tested (a fork of our own must come back), so that
 *      no registration can be accepted before forks can be seen;
 *   2. the registry and relay, fed by the connector's event batches;
 *   3. the FUSE mount, through which users register;
 *   4. "ready" (log line and sd_notify READY=1).
 */
import { AttributeFs } from './fs';
import { createLogger, type LogLevel, type Logger } from './log';
import { ProcConnector, describeProcConnectorError } from './netlink';
import { createPatchAttributes } from './relay/attributes';
import { Relay } from './relay/relay';
import { checkPidfdThreadSupport } from './relay/registry';
import { SystemdNotifier } from './systemd/notify';

export interface DaemonOptions {
  mountpoint: string;
  signal: number;
  strict: boolean;
  processesOnly: boolean;
  logLevel: LogLevel;
  /** The proc connector socket's receive buffer; the library's default when undefined. */
  receiveBufferBytes?: number;
}

/** glibc's SIGSETXID: reserved, neither blockable nor catchable by a glibc program. */
const GLIBC_RESERVED_SIGNAL = 33;
/** How often STATUS= is refreshed for `systemctl status`. */
const STATUS_INTERVAL_MS = 5000;

/** Runs the daemon until SIGINT/SIGTERM; resolves to the process exit code. */
export async function runDaemon(options: DaemonOptions): Promise<number> {
  const log = createLogger(options.logLevel);
  const notifier = SystemdNotifier.fromEnvironment();

  if (process.geteuid?.() !== 0) {
    log.error(
      'relayfork must run as root: it mounts a FUSE filesystem, reads the proc connector and signals any process. Run it with sudo or as a systemd service.',
    );
    return 1;
  }

  const daemon = new Daemon(options, log, notifier);
  try {
    await daemon.start();
  } catch (err) {
    const line = describeStartError(err);
    log.error(line);
    // systemd keeps the last STATUS= of a failed unit: `systemctl status relayfork` shows why.
    notifier.status(line);
    await daemon.shutdown();
    return 1;
  }
  return daemon.untilStopped();
}

/** One line for a start-up failure (each layer's errors already say what to do). */
function describeStartError(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').trim();
}

class Daemon {
  private connector: ProcConnector | undefined;
  private relay: Relay | undefined;
  private tree: AttributeFs | undefined;
  private mounted = false;
  private statusTimer: NodeJS.Timeout | undefined;
  private stopping: Promise<void> | undefined;
  private resolveStopped: ((code: number) => void) | undefined;
  private readonly stopped: Promise<number>;

  constructor(
    private readonly options: DaemonOptions,
    private readonly log: Logger,
    private readonly notifier: SystemdNotifier,
  ) {
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
  }

  async start(): Promise<void> {
    const { options, log } = this;
    if (options.signal === GLIBC_RESERVED_SIGNAL) {
      log.warn(
        'the signal in effect is 33, the patch default: glibc reserves 33 (SIGSETXID), so a glibc program can neither block nor catch it and a registrant not prepared for it is killed. Use --signal 40 or echo 40 > signal.',
      );
    }
    this.installSignalHandlers();

    checkPidfdThreadSupport();
    const relay = new Relay({
      signal: options.signal,
      processesOnly: options.processesOnly,
      logger: log,
    });
    this.relay = relay;

    // Fork events only: the receive worker relays them itself (relay.link) and sees registrants'
    // exits on their pidfds, so no event crosses to this thread on the everyday path.
    const connector = new ProcConnector({
      events: ['fork'],
      receiveBufferBytes: options.receiveBufferBytes,
      relay: relay.link,
    });
    this.connector = connector;
    connector.on('loss', (loss) => {
      log.warn(
        `the proc connector socket overflowed: ${loss.dropped} events lost so far (${loss.overruns} overruns); forks in them were not relayed`,
      );
      // Cheap insurance: every registrant's pidfd is looked at once more.
      relay.pruneExited();
    });
    connector.on('error', (err) => log.error(describeProcConnectorError(err)));
    try {
      await connector.open();
      await connector.selfTest();
    } catch (err) {
      // A raw syscall error becomes the connector's one line with the cause and the fix.
      throw new Error(describeProcConnectorError(err), { cause: err });
    }
    log.info(
      `subscribed to the proc connector (fork events, ${connector.subscription} subscription); self-test passed`,
    );

    const tree = new AttributeFs(
      options.mountpoint,
      createPatchAttributes(relay, { strict: options.strict, logger: log }),
    );
    this.tree = tree;
    tree.on('notice', (notice) =>
      notice.kind === 'stale-mount-cleared' || notice.kind === 'attribute-failed'
        ? log.warn(notice.message)
        : log.info(notice.message),
    );
    await tree.mount();
    this.mounted = true;
    log.info(`mounted ${options.mountpoint} (processes, signal ${relay.signal})`);

    log.info(
      `ready: relaying forks to the processes registered in ${options.mountpoint}/processes`,
    );
    this.notifier.ready(this.statusLine());
    this.notifier.startWatchdog();
    this.statusTimer = setInterval(
      () => this.notifier.status(this.statusLine()),
      STATUS_INTERVAL_MS,
    );
    this.statusTimer.unref();
  }

  /** One human-readable line for `systemctl status`. */
  private statusLine(): string {
    const relay = this.relay;
    const connector = this.connector;
    if (!relay || !connector) return 'starting';
    const c = relay.counters;
    const lost = connector.counters.dropped;
    return `${relay.registry.size} registrants, signal ${relay.signal}; ${c.forksSeen} forks seen, ${c.signalsSent} signals sent, ${c.signalsLost} lost to full queues, ${lost} events lost`;
  }

  private installSignalHandlers(): void {
    // A signal handler only starts shutdown; shutdown itself runs on the event loop.
    const onSignal = (name: NodeJS.Signals): void => {
      this.log.info(`${name} received: shutting down`);
      void this.shutdown().then(() => this.resolveStopped?.(0));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }

  untilStopped(): Promise<number> {
    return this.stopped;
  }

  /** Undo start-up in reverse order. Idempotent: every later call returns the first one's promise. */
  shutdown(): Promise<void> {
    this.stopping ??= this.doShutdown();
    return this.stopping;
  }

  private async doShutdown(): Promise<void> {
    this.notifier.stopping();
    if (this.statusTimer) clearInterval(this.statusTimer);
    const steps: Array<[string, () => Promise<void> | void]> = [
      ['unmount', () => this.tree?.close()],
      ['close the relay', () => this.relay?.close()],
      ['unsubscribe', () => this.connector?.close()],
      ['close the notifier', () => this.notifier.close()],
    ];
    for (const [what, step] of steps) {
      try {
        await step();
      } catch (err) {
        this.log.error(
          `shutdown: could not ${what}: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    process.removeAllListeners('SIGINT');
    process.removeAllListeners('SIGTERM');
    if (this.mounted) this.log.info(`unmounted ${this.options.mountpoint}`);
  }
}
