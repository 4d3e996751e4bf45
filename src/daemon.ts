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
import fs from 'node:fs';
import path from 'node:path';
import { AdoptRefused, AttributeFs, parseHandoverName } from './fs';
import { createLogger, type LogFormat, type LogLevel, type Logger } from './log';
import {
  getResourceLimit,
  ignoreSignal,
  RLIMIT_NOFILE,
  setResourceLimit,
  SIGUSR1,
} from './native/libc';
import { DEFAULT_RECEIVE_BUFFER_BYTES, ProcConnector, describeProcConnectorError } from './netlink';
import { createPatchAttributes } from './relay/attributes';
import { Relay } from './relay/relay';
import { checkPidfdThreadSupport } from './relay/registry';
import { StateFile, StatePersister, restoreRegistrations } from './relay/stateFile';
import { createStatsAttribute, statsLine, type DaemonStats } from './relay/stats';
import { MountFdStore } from './systemd/mountFdStore';
import { SystemdNotifier } from './systemd/notify';

export interface DaemonOptions {
  mountpoint: string;
  signal: number;
  strict: boolean;
  processesOnly: boolean;
  logLevel: LogLevel;
  /** 'journal' (sd-daemon priority prefixes) or 'text'; chosen from $JOURNAL_STREAM if unset. */
  logFormat?: LogFormat;
  /** Let every user register its own process or threads (processes mode 0666). */
  allowSelfRegister?: boolean;
  /** Where registrations and the signal are kept across restarts; false: nowhere. */
  stateFile: string | false;
  /** The proc connector socket's receive buffer; the library's default when undefined. */
  receiveBufferBytes?: number;
  /**
   * The receive worker's nice value while it is behind the kernel (src/netlink/catchUpPriority.ts);
   * undefined: never raised. The CLI's default is DEFAULT_CATCH_UP_NICE.
   */
  catchUpNice?: number;
  /**
   * Keep the FUSE connection in systemd's fd store (FileDescriptorStoreMax= >= 1), so that a
   * restart or a crash keeps the mount and the next start serves it on.
   */
  fdStore?: boolean;
}

/** glibc's SIGSETXID: reserved, neither blockable nor catchable by a glibc program. */
const GLIBC_RESERVED_SIGNAL = 33;
/** File descriptors the daemon needs besides the registrants' pidfds (stdio, sockets, workers). */
const RESERVED_FDS = 64;
/**
 * The receive worker counts as stalled after this long without a heartbeat. Each health check
 * asks it for one (Relay.probeWorker), which it gives at once when idle and within 100 ms when
 * busy, so a worker that has not beaten since the previous check did not answer.
 */
const WORKER_STALL_MS = 3000;
/** How long a read through the mount may take before the watchdog counts the FUSE side as stalled. */
const MOUNT_STAT_TIMEOUT_MS = 5000;
/** How often STATUS= is refreshed for `systemctl status`. */
const STATUS_INTERVAL_MS = 5000;

/** Start-up was ended by SIGINT/SIGTERM: not a failure, the user asked for it. */
class StartCancelled extends Error {
  constructor() {
    super('start-up cancelled by a signal');
  }
}

/**
 * Node starts its inspector on SIGUSR1 (listening on 127.0.0.1:9229), and whoever reaches that
 * port evaluates code in the process: in a root daemon, any local user would become root. The
 * signal is ignored process-wide (SIG_IGN through libc: Node 20 has no --disable-sigusr1, and a
 * JS listener does not stop the inspector).
 */
export function closeInspectorSignal(): void {
  ignoreSignal(SIGUSR1);
}

/** Runs the daemon until SIGINT/SIGTERM; resolves to the process exit code. */
export async function runDaemon(options: DaemonOptions): Promise<number> {
  closeInspectorSignal();
  const log = createLogger(options.logLevel, options.logFormat);
  const notifier = SystemdNotifier.fromEnvironment();
  if (notifier.disabledReason !== undefined) {
    log.debug(`sd_notify is off: ${notifier.disabledReason}`);
  }

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
    if (err instanceof StartCancelled) {
      await daemon.shutdown();
      return 0;
    }
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
  private persister: StatePersister | undefined;
  private stateFile: StateFile | undefined;
  private registrantsEver = 0;
  private lastHeartbeat = -1;
  private lastHeartbeatChange = Date.now();
  private unhealthy = false;
  private readonly startedAt = Date.now();
  private mounted = false;
  private fdStore: MountFdStore | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private stopping: Promise<void> | undefined;
  /** The process signal listeners this daemon added (and removes again; nobody else's). */
  private readonly signalListeners: Array<[NodeJS.Signals, (signal: NodeJS.Signals) => void]> = [];
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
    this.raiseOpenFileLimit();

    checkPidfdThreadSupport();
    const relay = new Relay({
      signal: options.signal,
      processesOnly: options.processesOnly,
      logger: log,
    });
    this.relay = relay;
    relay.registry.on('registered', () => this.registrantsEver++);

    // Fork events only: the receive worker relays them itself (relay.link) and sees registrants'
    // exits on their pidfds, so no event crosses to this thread on the everyday path.
    const connector = new ProcConnector({
      events: ['fork'],
      receiveBufferBytes: options.receiveBufferBytes,
      relay: relay.link,
      catchUpNice: options.catchUpNice,
    });
    this.connector = connector;
    let droppedBefore = 0;
    connector.on('loss', (loss) => {
      const lost = loss.dropped - droppedBefore;
      droppedBefore = loss.dropped;
      log.warn(
        `the proc connector socket overflowed: ${lost} events lost (${loss.dropped} so far, ${loss.overruns} overruns); looking for their forks in /proc`,
      );
      // Cheap insurance: every registrant's pidfd is looked at once more.
      relay.pruneExited();
      const plan = relay.recoverLostForks(lost);
      for (const fork of plan.forks) {
        log.debug(`recovered fork: ${fork.parent} -> ${fork.child} (relayed late)`);
      }
      log.warn(
        `recovered ${plan.forks.length} lost forks from /proc (relayed late); about ${plan.unrecoverable} were of tasks gone before the scan`,
      );
    });
    connector.on('error', (err) => log.error(describeProcConnectorError(err)));
    try {
      await connector.open();
      this.throwIfStopping();
      await connector.selfTest();
    } catch (err) {
      this.throwIfStopping();
      // A raw syscall error becomes the connector's one line with the cause and the fix.
      throw new Error(describeProcConnectorError(err), { cause: err });
    }
    this.throwIfStopping();
    log.info(
      `subscribed to the proc connector (fork events, ${connector.subscription} subscription); self-test passed`,
    );
    const warmUp = relay.warmUp;
    if (warmUp !== undefined && warmUp.sent === warmUp.forks) {
      log.debug(
        `fast path warmed up: ${warmUp.forks} synthetic forks relayed (signal 0, to the daemon itself) in ${warmUp.ms.toFixed(1)} ms`,
      );
    } else if (warmUp !== undefined) {
      // Its sends go the way a registrant's would: a failure here is worth a look.
      log.warn(
        `the fast path's warm-up made ${warmUp.sent} of ${warmUp.forks} sends (signal 0, to the daemon itself); the first forks may be relayed more slowly`,
      );
    }
    this.checkReceiveBuffer(connector);
    this.reportCatchUp(connector);
    this.restoreState(relay);

    const tree = new AttributeFs(options.mountpoint, {
      ...createPatchAttributes(relay, {
        strict: options.strict,
        logger: log,
        isShuttingDown: () => this.stopping !== undefined,
        allowSelfRegister: options.allowSelfRegister,
        onSignalChanged: () => this.persister?.signalChanged(),
      }),
      stats: createStatsAttribute(
        () => this.stats(),
        () =>
          relay.registry.list
            .slice()
            .reverse()
            .map((r) => ({ id: r.id, counters: relay.countersOf(r) })),
      ),
    });
    this.tree = tree;
    tree.on('notice', (notice) =>
      notice.kind === 'stale-mount-cleared' || notice.kind === 'attribute-failed'
        ? log.warn(notice.message)
        : log.info(notice.message),
    );
    // A connection systemd kept for us (the fd store) is served on; otherwise mount.
    const fdStore = new MountFdStore(this.notifier, {
      store: options.fdStore === true,
      isConnectionName: (name) => parseHandoverName(name) !== undefined,
      isRefusal: (err) => err instanceof AdoptRefused,
      info: (message) => log.info(message),
      warn: (message) => log.warn(message),
    });
    this.fdStore = fdStore;
    const adopted = await fdStore.adoptPassed(tree);
    if (!adopted) await tree.mount();
    this.mounted = true;
    this.throwIfStopping();
    if (!adopted) log.info(`mounted ${options.mountpoint} (processes, signal ${relay.signal})`);
    fdStore.store(tree);

    log.info(
      `ready: relaying forks to the processes registered in ${options.mountpoint}/processes`,
    );
    this.notifier.ready(this.statusLine());
    const worker = relay.worker;
    log.debug(`the receive worker is thread ${worker.tid}`);
    this.notifier.startWatchdog(() => this.healthy());
    // Only where systemd listens: elsewhere the line would be built every 5 s for no one (the
    // main thread's only wake-up of an idle daemon outside systemd).
    if (this.notifier.enabled) {
      this.statusTimer = setInterval(
        () => this.notifier.status(this.statusLine()),
        STATUS_INTERVAL_MS,
      );
      this.statusTimer.unref();
    }
  }

  /** Unmount, or leave the mount to the next start when systemd restarts us (the fd store). */
  private async unmount(): Promise<void> {
    const tree = this.tree;
    if (tree === undefined) return;
    if (this.fdStore === undefined) return tree.close();
    if ((await this.fdStore.stop(tree)) === 'left') this.mounted = false;
  }

  /** Say whether the receive worker can raise its priority when it falls behind. */
  private reportCatchUp(connector: ProcConnector): void {
    const probe = connector.catchUp;
    if (probe?.kind === 'ready') {
      this.log.debug(
        `the receive worker runs at nice ${probe.nice} while it is behind the kernel (its own: ${probe.base})`,
      );
    } else if (probe?.kind === 'refused') {
      this.log.warn(
        `cannot raise the receive worker to nice ${probe.nice} when it falls behind (setpriority: ${probe.code}): under a fork storm it catches up at nice ${probe.base}, more slowly; give the daemon CAP_SYS_NICE, or pass --catch-up-nice off`,
      );
    }
  }

  /** The counters of the `stats` file. */
  private stats(): DaemonStats {
    const c = this.relay?.counters;
    const n = this.connector?.counters;
    return {
      uptime_seconds: Math.floor((Date.now() - this.startedAt) / 1000),
      forks_seen_process: c ? c.forksSeen - c.threadsSeen : 0,
      forks_seen_thread: c?.threadsSeen ?? 0,
      forks_relayed: c?.forksRelayed ?? 0,
      signals_sent: c?.signalsSent ?? 0,
      signals_lost_queue_full: c?.signalsLost ?? 0,
      signals_failed: c?.signalsFailed ?? 0,
      registrants: this.relay?.registry.size ?? 0,
      registrants_ever: this.registrantsEver,
      registrants_pruned_exited: c?.registrantsExited ?? 0,
      registrants_pruned_gone: c?.registrantsGone ?? 0,
      netlink_overruns: n?.overruns ?? 0,
      events_dropped: n?.dropped ?? 0,
      sequence_gaps: n?.sequenceGaps ?? 0,
      forks_recovered: c?.forksRecovered ?? 0,
      forks_unrecoverable: c?.forksUnrecoverable ?? 0,
      state_file_writes: this.stateFile?.writes ?? 0,
      catch_ups: n?.catchUps ?? 0,
    };
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

  /**
   * Registrations of the daemon that ran before (an upgrade, a crash, `systemctl restart`): each
   * id comes back only if it still names the same task. A state file that cannot be used is
   * logged and ignored; from here on every change is saved.
   */
  private restoreState(relay: Relay): void {
    const { options, log } = this;
    if (options.stateFile === false) return;
    const file = new StateFile(options.stateFile);
    this.stateFile = file;
    const loaded = file.load();
    if (loaded.kind === 'unusable') {
      log.warn(
        `ignoring the state file ${file.path}: ${loaded.reason}; starting with no registrants`,
      );
    } else if (loaded.kind === 'loaded') {
      const report = restoreRegistrations(relay.registry, loaded.state, (n) => relay.setSignal(n));
      const dropped = report.dropped.map(({ id, reason }) => `${id} (${reason})`).join(', ');
      log.info(
        `restored from ${file.path}: ${report.restored.length} registrants` +
          (report.restored.length > 0 ? ` (${report.restored.join(' ')})` : '') +
          (report.signalRestored
            ? `, signal ${relay.signal}`
            : ', not the signal (saved before a reboot)') +
          (dropped !== '' ? `; dropped ${dropped}` : ''),
      );
    }
    const persister = new StatePersister(
      relay.registry,
      file,
      () => relay.signal,
      (err) =>
        log.error(
          `could not save the state file ${file.path}: ${err instanceof Error ? err.message : String(err)}; registrations will not survive a restart`,
        ),
    );
    persister.attach();
    this.persister = persister;
  }

  /**
   * What WATCHDOG=1 vouches for: the receive worker has shown progress (its heartbeat moves at
   * every wake-up and housekeeping, and each check asks it for one: an idle worker sleeps)
   * within WORKER_STALL_MS, and a read of `signal` through the mount answers within
   * MOUNT_STAT_TIMEOUT_MS. Each failure is logged once, as it starts.
   */
  private async healthy(): Promise<boolean> {
    const relay = this.relay;
    if (relay === undefined || this.stopping !== undefined) return false;
    const now = Date.now();
    const beat = relay.worker.heartbeat;
    if (beat !== this.lastHeartbeat) {
      this.lastHeartbeat = beat;
      this.lastHeartbeatChange = now;
    }
    // For the next check: a worker asleep on a quiet machine beats when woken.
    relay.probeWorker();
    const workerStalledMs = now - this.lastHeartbeatChange;
    let problem: string | undefined;
    if (workerStalledMs > WORKER_STALL_MS) {
      problem = `the receive worker has shown no progress for ${Math.round(workerStalledMs / 1000)} s`;
    } else {
      // A read, not a stat: the kernel may answer a stat from its attribute cache.
      const file = path.join(this.tree?.mountpoint ?? this.options.mountpoint, 'signal');
      let timer: NodeJS.Timeout | undefined;
      const answered = await Promise.race([
        fs.promises.readFile(file).then(
          () => true,
          () => false,
        ),
        new Promise<false>(
          (resolve) => (timer = setTimeout(resolve, MOUNT_STAT_TIMEOUT_MS, false)),
        ),
      ]);
      clearTimeout(timer);
      if (!answered)
        problem = `a read of ${file} did not answer within ${MOUNT_STAT_TIMEOUT_MS} ms`;
    }
    if (problem !== undefined && !this.unhealthy) {
      this.log.warn(`watchdog: not pinging systemd: ${problem}`);
    } else if (problem === undefined && this.unhealthy) {
      this.log.info('watchdog: healthy again, pinging systemd');
    }
    this.unhealthy = problem !== undefined;
    return !this.unhealthy;
  }

  /** A SIGINT/SIGTERM during start-up ends it at the next step: nothing starts afterwards. */
  private throwIfStopping(): void {
    if (this.stopping !== undefined) throw new StartCancelled();
  }

  private installSignalHandlers(): void {
    // A signal handler only starts shutdown; shutdown itself runs on the event loop.
    const onStop = (name: NodeJS.Signals): void => {
      this.log.info(`${name} received: shutting down`);
      void this.shutdown().then(() => this.resolveStopped?.(0));
    };
    // SIGHUP's default action would end the daemon (a closed terminal, a stray `kill -HUP`) and
    // leave its mount stale. There is no configuration to reload and the log is stderr, which
    // the daemon does not own: noted, nothing else.
    const onHangUp = (): void => {
      this.log.info('SIGHUP received: ignored (relayfork has nothing to reload)');
    };
    this.signalListeners.push(['SIGINT', onStop], ['SIGTERM', onStop], ['SIGHUP', onHangUp]);
    for (const [name, listener] of this.signalListeners) process.on(name, listener);
  }

  /**
   * Every registrant holds a pidfd, so the open-file limit caps the registrants: raise the soft
   * limit to the hard one (Node usually has already) and say what that allows.
   */
  private raiseOpenFileLimit(): void {
    try {
      const limit = getResourceLimit(RLIMIT_NOFILE);
      if (limit.soft < limit.hard) {
        setResourceLimit(RLIMIT_NOFILE, { soft: limit.hard, hard: limit.hard });
      }
      this.log.info(
        `open-file limit ${limit.hard}: room for about ${Math.max(0, limit.hard - RESERVED_FDS)} registrants (raise LimitNOFILE= for more)`,
      );
    } catch (err) {
      this.log.warn(
        `could not raise the open-file limit: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }

  /**
   * Without CAP_NET_ADMIN, SO_RCVBUFFORCE is refused and net.core.rmem_max caps the receive
   * buffer: a burst the full buffer would have held is lost instead. Say what was obtained.
   */
  private checkReceiveBuffer(connector: ProcConnector): void {
    const requested = this.options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES;
    // The kernel reports twice what it was given (socket(7)).
    const obtained = Math.floor(connector.receiveBufferBytes / 2);
    if (obtained < requested) {
      this.log.warn(
        `the proc connector receive buffer is ${obtained} bytes, not the ${requested} asked for: net.core.rmem_max capped it (no CAP_NET_ADMIN); bursts beyond it lose forks`,
      );
    }
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
    if (this.relay !== undefined) this.log.info(`stats at shutdown: ${statsLine(this.stats())}`);
    const steps: Array<[string, () => Promise<void> | void]> = [
      ['unmount', () => this.unmount()],
      ['stop saving the state', () => this.persister?.detach()],
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
    for (const [name, listener] of this.signalListeners.splice(0)) process.off(name, listener);
    if (this.mounted) this.log.info(`unmounted ${this.options.mountpoint}`);
  }
}
