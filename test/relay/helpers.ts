/**
 * Helpers of the src/relay tests alone: the compiled RT-signal consumer (test/fixtures/
 * rt_consumer.c) as a real child process, and the kernel knobs the tests need. Children, waiting,
 * fixtures and temp dirs: test/support.
 */
import fs from 'node:fs';
import type { ExitEvent, ForkEvent } from '../../src/netlink/events';
import {
  parseSignalLine,
  spawnChild,
  waitFor,
  type Child,
  type Exit,
  type ReceivedSignal,
} from '../support';

export const TEST_SIGNAL = 40; // glibc reserves 32 and 33

export interface ConsumerOptions {
  /** Extra consumer arguments (--no-read, --thread, --signal N to override TEST_SIGNAL). */
  args?: string[];
  /** Spawn through `prlimit --sigpending=N`, which execs the consumer (same pid). */
  sigpending?: number;
  /**
   * Run as this uid (through `setpriv`, which execs too). Pending signals are counted per user
   * against RLIMIT_SIGPENDING (kernel/signal.c __sigqueue_alloc, the receiver's ucounts), so a
   * consumer with a uid of its own is not affected by other root processes' pending signals.
   */
  uid?: number;
}

/**
 * A running rt_consumer (a test/support child: cleanupAll or stopAllChildren ends it): its
 * signal lines as they arrive.
 */
export class Consumer {
  private constructor(private readonly child: Child) {}

  /** Spawn the consumer and wait for its "ready" line (signals blocked from then on). */
  static async start(binary: string, options: ConsumerOptions = {}): Promise<Consumer> {
    let argv = [binary, '--signal', String(TEST_SIGNAL), ...(options.args ?? [])];
    if (options.uid !== undefined) {
      const id = String(options.uid);
      argv = ['setpriv', `--reuid=${id}`, `--regid=${id}`, '--clear-groups', '--', ...argv];
    }
    if (options.sigpending !== undefined) {
      argv = ['prlimit', `--sigpending=${options.sigpending}`, '--', ...argv];
    }
    const child = spawnChild(argv[0], argv.slice(1));
    await child.waitForLine(/^ready$/, 'stdout');
    return new Consumer(child);
  }

  get pid(): number {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.child.running;
  }

  get exited(): Promise<Exit> {
    return this.child.exited;
  }

  /** The signal lines so far (everything after "ready"). */
  get lines(): string[] {
    const out = this.child.stdout;
    return out.slice(out.indexOf('ready') + 1);
  }

  /** Wait until at least `count` signal lines arrived; returns all lines so far, parsed. */
  async waitForLines(count: number, timeoutMs = 10000): Promise<ReceivedSignal[]> {
    await waitFor(
      () => `${count} lines from consumer ${this.pid} (lines: ${JSON.stringify(this.lines)})`,
      () => {
        if (this.lines.length >= count) return true;
        if (!this.alive) throw new Error(`consumer ${this.pid} exited: ${this.child.output()}`);
        return false;
      },
      timeoutMs,
    );
    return this.lines.map(parseSignalLine);
  }

  /** SIGTERM, then SIGKILL if it does not go; resolves once Node has reaped it. */
  async stop(): Promise<void> {
    await this.child.stop('SIGTERM', 3000);
  }
}

/**
 * Start a consumer that gets pid `target`, by writing target - 1 to ns_last_pid just before the
 * fork (kernel/pid.c allocates last + 1). Other processes on the machine fork too, so retry.
 */
export async function startConsumerWithPid(
  binary: string,
  target: number,
  timeoutMs = 30000,
): Promise<Consumer> {
  const deadline = Date.now() + timeoutMs;
  let attempts = 0;
  while (Date.now() < deadline) {
    attempts++;
    fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(target - 1));
    const consumer = await Consumer.start(binary);
    if (consumer.pid === target) return consumer;
    await consumer.stop();
    // Somebody else forked in between (a storm from another test?): let it pass.
    await new Promise((resolve) => setTimeout(resolve, Math.min(attempts, 50)));
  }
  throw new Error(`could not get pid ${target} again in ${attempts} attempts (${timeoutMs} ms)`);
}

/** The ids of the threads of `pid` other than its main thread (/proc/<pid>/task). */
export function otherThreadIds(pid: number): number[] {
  return fs
    .readdirSync(`/proc/${pid}/task`)
    .map(Number)
    .filter((tid) => tid !== pid);
}

export function pidMax(): number {
  return Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'latin1'));
}

/** An id below pid_max that names no task right now. */
export function unusedPid(): number {
  for (let id = pidMax() - 1; id > 300; id--) {
    if (!fs.existsSync(`/proc/${id}`)) return id;
  }
  throw new Error('no unused pid found');
}

/** The state letter of /proc/<pid>/stat ('S', 'Z'...), or undefined once it is gone. */
export function taskState(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

export function exitEvent(pid: number, tgid = pid): ExitEvent {
  return {
    kind: 'exit',
    cpu: 0,
    timestampNs: 0n,
    processPid: pid,
    processTgid: tgid,
    exitCode: 0,
    exitSignal: 17,
    parentPid: process.pid,
    parentTgid: process.pid,
  };
}

export function forkEvent(
  parentPid: number,
  parentTgid: number,
  childPid: number,
  childTgid: number,
): ForkEvent {
  return { kind: 'fork', cpu: 0, timestampNs: 0n, parentPid, parentTgid, childPid, childTgid };
}
