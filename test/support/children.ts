/**
 * Child processes of a test: spawned with their output collected as lines, tracked so that the
 * test file's cleanup ends every one still running (by its pid, or its whole process group when
 * it has one of its own), and waited for until the kernel has reaped them.
 */
import { execFile, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { promisify } from 'node:util';
import { DEFAULT_TIMEOUT_MS, waitFor } from './waitFor';

/** execFile as a promise: rejects on a non-zero exit (use run() to look at the exit instead). */
export const execFileAsync = promisify(execFile);

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** 'pipe' to write to the child (child.proc.stdin); default 'ignore'. */
  stdin?: 'pipe' | 'ignore';
  /** The child's own stdout and stderr go to ours ('inherit'), or nowhere; default collected. */
  output?: 'collect' | 'inherit' | 'ignore';
  /**
   * A process group of its own, signalled whole: for a shell whose background jobs would outlive
   * it.
   */
  group?: boolean;
  /** The signal cleanup ends it with (stopAllChildren); default SIGKILL. */
  cleanupSignal?: NodeJS.Signals;
}

const running = new Set<Child>();

/** A child process whose stdout and stderr are collected as lines. */
export class Child {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<Exit>;
  private exitState: Exit | undefined;

  constructor(
    readonly proc: ChildProcess,
    private readonly options: Pick<SpawnOptions, 'group' | 'cleanupSignal'> = {},
  ) {
    collectLines(proc.stdout, this.stdout);
    collectLines(proc.stderr, this.stderr);
    running.add(this);
    this.exited = new Promise((resolve) => {
      const done = (code: number | null, signal: NodeJS.Signals | null): void => {
        this.exitState ??= { code, signal };
        // A group's other members may outlive its leader: cleanup still signals the group.
        if (options.group !== true) running.delete(this);
        resolve(this.exitState);
      };
      proc.once('exit', done);
      // A child that could not be spawned (ENOENT) emits 'error' and never 'exit'.
      proc.once('error', () => done(null, null));
    });
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

  /** The first line of `stream` matching `pattern`; fails if the child exits first. */
  waitForLine(
    pattern: RegExp,
    stream: 'stdout' | 'stderr',
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<string> {
    const lines = stream === 'stdout' ? this.stdout : this.stderr;
    return waitFor(
      () => `${pattern} from pid ${this.proc.pid} (output so far:\n${this.output()})`,
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

  /**
   * Signal it, unless it has exited; a child with a group of its own: the group, as long as any
   * member is left (its id cannot be reused until then).
   */
  kill(signal: NodeJS.Signals): void {
    if (this.proc.pid === undefined) return;
    if (this.options.group !== true && !this.running) return;
    try {
      process.kill(this.options.group === true ? -this.proc.pid : this.proc.pid, signal);
    } catch {
      // Exited in between: not reaped yet, but gone.
    }
  }

  /** Ends the child and waits for it to be reaped; SIGKILL if it does not go within timeoutMs. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Exit> {
    this.kill(signal);
    const timer = setTimeout(() => this.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** What cleanup does: stop with the cleanup signal (SIGKILL unless the spawner said). */
  cleanup(): Promise<Exit> {
    running.delete(this);
    return this.stop(this.options.cleanupSignal ?? 'SIGKILL');
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
  args: readonly string[],
  options: SpawnOptions = {},
): Child {
  const output = options.output ?? 'collect';
  const stdio: StdioOptions = [
    options.stdin ?? 'ignore',
    output === 'collect' ? 'pipe' : output,
    output === 'collect' ? 'pipe' : output,
  ];
  const proc = spawn(file, args, {
    stdio,
    env: options.env ?? process.env,
    cwd: options.cwd,
    detached: options.group === true,
  });
  return new Child(proc, options);
}

/** End every child of this process (of this test file, under jest) still running. */
export async function stopAllChildren(): Promise<void> {
  await Promise.all([...running].map((c) => c.cleanup()));
}

export interface Ran extends Exit {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** SIGKILL it after this long (a liveness bound); default 60 s. */
  timeoutMs?: number;
}

/** Run a program to completion, capturing its output; never throws for a non-zero exit. */
export function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<Ran> {
  const child = spawnChild(file, args, { env: options.env, cwd: options.cwd });
  return finished(child.proc, options.timeoutMs);
}

/**
 * Wait for a spawned child (stdout and stderr piped) to exit and close its streams, capturing
 * what it wrote; SIGKILL it after `timeoutMs` (a liveness bound, default 60 s).
 */
export function finished(proc: ChildProcess, timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    proc.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    proc.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
