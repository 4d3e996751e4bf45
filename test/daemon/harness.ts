/**
 * The daemon as a user runs it (`node dist/cli.js` in a child process), built on test/support:
 * real mounts in per-test temp dirs, real C programs compiled with cc. The daemon is a separate
 * process, so the tests may use synchronous fs calls on its mount.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, Child, detachMountsBelow, requireBuild, requireRoot, type Exit } from '../support';

export const RELAY_SIGNAL = 40;
export const SI_ASYNCIO = -4;

/** Fails loudly where the tests cannot mean anything. */
export function requireRootAndBuild(): void {
  requireRoot('FUSE, proc connector');
  requireBuild();
}

/** How long a daemon may take to exit after SIGTERM before a test SIGKILLs it. */
const DAEMON_STOP_TIMEOUT_MS = 30_000;

/** The daemon, started the way a user starts it; cleanup ends it with SIGTERM (it unmounts). */
export class Daemon extends Child {
  constructor(
    readonly mountpoint: string,
    extraArgs: string[] = [],
    prefix: string[] = [],
    env: NodeJS.ProcessEnv = process.env,
  ) {
    // Each test daemon keeps its own state file: the default, /run/relayfork.state, is shared.
    const state = extraArgs.some((a) => a === '--state' || a === '--no-state')
      ? []
      : ['--state', `${mountpoint}.state`];
    const argv = [
      ...prefix,
      process.execPath,
      CLI,
      '--mountpoint',
      mountpoint,
      ...state,
      ...extraArgs,
    ];
    super(spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env }), {
      cleanupSignal: 'SIGTERM',
    });
  }

  static async start(
    mountpoint: string,
    extraArgs: string[] = ['--signal', String(RELAY_SIGNAL)],
    env: NodeJS.ProcessEnv = process.env,
  ): Promise<Daemon> {
    const daemon = new Daemon(mountpoint, extraArgs, [], env);
    try {
      await daemon.waitForLine(/ready: relaying forks/, 'stderr', 20000);
    } catch (err) {
      await daemon.stop('SIGKILL');
      throw err;
    }
    return daemon;
  }

  file(name: 'processes' | 'signal'): string {
    return path.join(this.mountpoint, name);
  }

  /** One daemon-wide counter of the `stats` file; throws if the file does not have it. */
  stat(name: string): number {
    const line = fs
      .readFileSync(path.join(this.mountpoint, 'stats'), 'utf8')
      .split('\n')
      .find((l) => l.startsWith(`${name} `));
    if (line === undefined) throw new Error(`no ${name} in ${this.mountpoint}/stats`);
    return Number(line.split(' ')[1]);
  }

  /** The ids `processes` lists. */
  listed(): number[] {
    return fs
      .readFileSync(this.file('processes'), 'utf8')
      .trim()
      .split(' ')
      .filter(Boolean)
      .map(Number);
  }

  /**
   * Ends the daemon; SIGKILL only after `timeoutMs`. A liveness bound, generous by default: its
   * shutdown unmounts and stops the receive worker, which takes seconds on a loaded machine.
   */
  override stop(
    signal: NodeJS.Signals = 'SIGTERM',
    timeoutMs = DAEMON_STOP_TIMEOUT_MS,
  ): Promise<Exit> {
    return super.stop(signal, timeoutMs);
  }

  /** Stops the daemon and, if it could not unmount, detaches its mount (last resort). */
  async shutdown(): Promise<void> {
    await this.stop('SIGTERM');
    await detachMountsBelow(this.mountpoint);
  }

  override cleanup(): ReturnType<Child['cleanup']> {
    return this.shutdown().then(() => this.exited);
  }
}

/**
 * Arguments for test/fixtures/rt_consumer, a registrant as a program written for the patch is:
 * it blocks the relay signal, registers itself in `processes` when given, prints "ready" and
 * then one line per signal (test/support/rtConsumer.ts parses them).
 */
export function consumerArgs(processes?: string): string[] {
  return ['--signal', String(RELAY_SIGNAL), ...(processes ? ['--register', processes] : [])];
}
