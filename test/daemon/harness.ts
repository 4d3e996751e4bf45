/**
 * Test harness for the daemon as a user runs it: `node dist/cli.js` in a child process, real
 * mounts in per-test temp dirs, real C programs compiled with cc. The daemon is a separate
 * process, so the tests may use synchronous fs calls on its mount.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

export const execFileAsync = promisify(execFile);
/** The project root: the nearest folder above this file holding package.json (also from a build). */
export const ROOT = findRoot(__dirname);
function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (dir === path.dirname(dir)) throw new Error(`no package.json above ${from}`);
  }
}
export const CLI = path.join(ROOT, 'dist', 'cli.js');
export const RELAY_SIGNAL = 40;
export const SI_ASYNCIO = -4;

/** Fails loudly where the tests cannot mean anything. */
export function requireRootAndBuild(): void {
  if (process.geteuid?.() !== 0) throw new Error('these tests need root (FUSE, proc connector)');
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
}

export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 10000,
  intervalMs = 20,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export function isMounted(mountpoint: string): boolean {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[1] === mountpoint);
}

/** A temp dir for one test file; `cleanup` removes it after unmounting anything left on it. */
export class TempDir {
  readonly path: string;
  constructor(prefix = 'relayfork-test-') {
    this.path = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  }
  join(...parts: string[]): string {
    return path.join(this.path, ...parts);
  }
  async cleanup(): Promise<void> {
    for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const target = line.split(' ')[1];
      if (target && target.startsWith(this.path)) {
        await execFileAsync('umount', ['-l', target]).catch(() => undefined);
      }
    }
    fs.rmSync(this.path, { recursive: true, force: true });
  }
}

/** Compiles test/fixtures/<name>.c into `dir` and returns the binary's path. */
export async function compileFixture(
  name: string,
  dir: string,
  flags: string[] = [],
): Promise<string> {
  const out = path.join(dir, name);
  await execFileAsync('cc', [
    '-O2',
    '-Wall',
    '-o',
    out,
    path.join(ROOT, 'test', 'fixtures', `${name}.c`),
    ...flags,
  ]);
  return out;
}

/** A child process whose stdout and stderr are collected as lines. */
export class Child {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitState: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(readonly proc: ChildProcess) {
    collectLines(proc.stdout, this.stdout);
    collectLines(proc.stderr, this.stderr);
    this.exited = new Promise((resolve) =>
      proc.once('exit', (code, signal) => {
        this.exitState = { code, signal };
        resolve(this.exitState);
      }),
    );
  }

  get pid(): number {
    if (this.proc.pid === undefined) throw new Error('child did not start');
    return this.proc.pid;
  }

  get running(): boolean {
    return this.exitState === undefined;
  }

  output(): string {
    return [...this.stdout, ...this.stderr].join('\n');
  }

  async waitForLine(
    pattern: RegExp,
    stream: 'stdout' | 'stderr',
    timeoutMs = 15000,
  ): Promise<string> {
    const lines = stream === 'stdout' ? this.stdout : this.stderr;
    return waitFor(
      `${pattern} from pid ${this.proc.pid} (output so far:\n${this.output()})`,
      () => {
        const hit = lines.find((l) => pattern.test(l));
        if (hit !== undefined) return hit;
        if (!this.running)
          throw new Error(`pid ${this.proc.pid} exited before ${pattern}:\n${this.output()}`);
        return undefined;
      },
      timeoutMs,
    );
  }

  /** Ends the child (by its pid) and waits for it; SIGKILL if it does not go in time. */
  async stop(
    signal: NodeJS.Signals = 'SIGTERM',
    timeoutMs = 10000,
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.proc.kill(signal);
    const timer = setTimeout(() => this.running && this.proc.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

function collectLines(stream: NodeJS.ReadableStream | null, into: string[]): void {
  if (!stream) return;
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    into.push(...parts);
  });
  stream.on('end', () => {
    if (partial) into.push(partial);
  });
}

export function spawnChild(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Child {
  return new Child(spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env }));
}

/** The daemon, started the way a user starts it. */
export class Daemon extends Child {
  constructor(
    readonly mountpoint: string,
    extraArgs: string[] = [],
    prefix: string[] = [],
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
    super(spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  static async start(
    mountpoint: string,
    extraArgs: string[] = ['--signal', String(RELAY_SIGNAL)],
  ): Promise<Daemon> {
    const daemon = new Daemon(mountpoint, extraArgs);
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

  /** Stops the daemon and, if it could not unmount, removes its mount (last resort). */
  async shutdown(): Promise<void> {
    await this.stop('SIGTERM');
    if (isMounted(this.mountpoint))
      await execFileAsync('umount', ['-l', this.mountpoint]).catch(() => undefined);
  }
}

/**
 * Arguments for test/fixtures/rt_consumer, a registrant as a program written for the patch is:
 * it blocks the relay signal, registers itself in `processes` when given, prints "ready" and
 * then one line per signal ("sig=<n> code=<si_code> pid=<si_pid> val=<si_value>").
 */
export function consumerArgs(processes?: string): string[] {
  return ['--signal', String(RELAY_SIGNAL), ...(processes ? ['--register', processes] : [])];
}

/** A signal as test/fixtures/rt_consumer prints it. */
export interface ReceivedSignal {
  sig: number;
  code: number;
  pid: number;
  val: number;
}

export function parseSignals(lines: readonly string[]): ReceivedSignal[] {
  const out: ReceivedSignal[] = [];
  for (const line of lines) {
    const m = /^sig=(\d+) code=(-?\d+) pid=(\d+) val=(-?\d+)$/.exec(line);
    if (m) out.push({ sig: +m[1], code: +m[2], pid: +m[3], val: +m[4] });
  }
  return out;
}

/** Runs test/fixtures/forker and returns the forks it made as [parent, child] pairs. */
export async function runForker(
  forker: string,
  width: number,
  depth: number,
): Promise<Array<[number, number]>> {
  const { stdout } = await execFileAsync(forker, [String(width), String(depth)]);
  return stdout
    .trim()
    .split('\n')
    .map((l) => l.split(' '))
    .map(([, p, c]) => [Number(p), Number(c)] as [number, number]);
}

export { once };
