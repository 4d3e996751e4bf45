/**
 * Test helpers for src/relay: the compiled RT-signal consumer (test/fixtures/rt_consumer.c) run
 * as real child processes, and the kernel knobs the tests need.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ExitEvent, ForkEvent } from '../../src/netlink/events';

const execFileAsync = promisify(execFile);

export const TEST_SIGNAL = 40; // glibc reserves 32 and 33
const CONSUMER_SOURCE = path.join(__dirname, '..', 'fixtures', 'rt_consumer.c');

export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error('these tests signal other processes and write ns_last_pid: run them as root');
  }
}

export async function makeTempDir(): Promise<string> {
  return fs.promises.mkdtemp(path.join(os.tmpdir(), 'relayfork-relay-'));
}

/** Compile rt_consumer.c into `dir`; returns the binary's path. */
export async function compileConsumer(dir: string): Promise<string> {
  const binary = path.join(dir, 'rt_consumer');
  await execFileAsync('cc', ['-O2', '-Wall', '-pthread', '-o', binary, CONSUMER_SOURCE]);
  return binary;
}

export interface SignalLine {
  sig: number;
  code: number;
  pid: number;
  val: number;
}

const LINE = /^sig=(\d+) code=(-?\d+) pid=(-?\d+) val=(-?\d+)$/;

export function parseLine(line: string): SignalLine {
  const m = LINE.exec(line);
  if (m === null) throw new Error(`unexpected consumer output: ${JSON.stringify(line)}`);
  return { sig: Number(m[1]), code: Number(m[2]), pid: Number(m[3]), val: Number(m[4]) };
}

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

/** Every consumer still running, so afterAll can end them even when a test failed. */
const running = new Set<Consumer>();

/** A running rt_consumer: its signal lines as they arrive. */
export class Consumer {
  readonly lines: string[] = [];
  readonly exited: Promise<void>;
  private hasExited = false;
  private ready = false;
  private partial = '';
  private stderr = '';
  private wake: (() => void) | undefined;

  private constructor(private readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => {
      child.once('exit', () => {
        this.hasExited = true;
        running.delete(this);
        this.wake?.();
        resolve();
      });
    });
    child.stdout?.setEncoding('latin1');
    child.stdout?.on('data', (chunk: string) => this.take(chunk));
    child.stderr?.setEncoding('latin1');
    child.stderr?.on('data', (chunk: string) => (this.stderr += chunk));
  }

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
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    const consumer = new Consumer(child);
    running.add(consumer);
    await consumer.until(() => consumer.ready, 10000, 'ready');
    return consumer;
  }

  get pid(): number {
    const pid = this.child.pid;
    if (pid === undefined) throw new Error('consumer has no pid');
    return pid;
  }

  get alive(): boolean {
    return !this.hasExited;
  }

  /** Wait until at least `count` signal lines arrived; returns all lines so far, parsed. */
  async waitForLines(count: number, timeoutMs = 10000): Promise<SignalLine[]> {
    await this.until(() => this.lines.length >= count, timeoutMs, `${count} lines`);
    return this.lines.map(parseLine);
  }

  /** SIGTERM, then SIGKILL if it does not go; resolves once Node has reaped it. */
  async stop(): Promise<void> {
    if (this.hasExited) return;
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch {
      // already gone
    }
    const timer = setTimeout(() => {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, 3000);
    await this.exited;
    clearTimeout(timer);
  }

  private take(chunk: string): void {
    this.partial += chunk;
    let nl: number;
    while ((nl = this.partial.indexOf('\n')) >= 0) {
      const line = this.partial.slice(0, nl);
      this.partial = this.partial.slice(nl + 1);
      if (!this.ready && line === 'ready') this.ready = true;
      else this.lines.push(line);
    }
    this.wake?.();
  }

  private async until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done()) {
      if (this.hasExited) {
        throw new Error(`consumer ${this.child.pid} exited before ${what}; stderr: ${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `consumer ${this.child.pid}: no ${what} within ${timeoutMs} ms (lines: ${JSON.stringify(this.lines)})`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 100));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }
}

/** End every consumer still running (afterAll). */
export async function stopAllConsumers(): Promise<void> {
  await Promise.all([...running].map((c) => c.stop()));
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

export async function waitFor(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
