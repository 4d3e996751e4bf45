/**
 * Shared helpers for the netlink tests: C fixtures compiled into a temp dir, waiting for events,
 * and running the TypeScript sources in a child node process (for namespaces and `watch`).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ProcConnector, ProcEvent } from '../../src/netlink';

const execFileAsync = promisify(execFile);

export const REPO = path.resolve(__dirname, '../..');

/** A temp dir holding compiled fixtures; remove() in afterAll. */
export class FixtureDir {
  private constructor(readonly dir: string) {}

  static async create(): Promise<FixtureDir> {
    return new FixtureDir(await mkdtemp(path.join(os.tmpdir(), 'relayfork-netlink-')));
  }

  /** cc -O2 -pthread test/fixtures/<name>.c -o <dir>/<name>; returns the binary's path. */
  async compile(name: string): Promise<string> {
    const out = path.join(this.dir, name);
    await execFileAsync('cc', [
      '-O2',
      '-pthread',
      '-Wall',
      '-o',
      out,
      path.join(REPO, 'test/fixtures', `${name}.c`),
    ]);
    return out;
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Collects every event a connector emits. */
export function collect(connector: ProcConnector): ProcEvent[] {
  const events: ProcEvent[] = [];
  connector.on('events', (batch) => {
    for (const e of batch) events.push(e);
  });
  return events;
}

export async function waitFor(
  what: string,
  predicate: () => boolean,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run a program to completion, capturing its output. */
export function run(file: string, args: string[], timeoutMs = 60_000): Promise<Ran> {
  return finished(spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] }), timeoutMs);
}

/** Wait for a spawned child (stdout/stderr piped) to exit; SIGKILL it after `timeoutMs`. */
export function finished(child: ChildProcess, timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * JavaScript for `node -e` that lets the child require the .ts sources (test/fixtures/
 * register-ts.cjs transpiles them on load, as ts-jest does for the tests themselves), so child
 * processes run the code under test rather than a possibly stale dist/.
 */
export const REQUIRE_TS = `require(${JSON.stringify(path.join(REPO, 'test/fixtures/register-ts.cjs'))});`;

/** `node -e` arguments running `body` (JavaScript) after REQUIRE_TS, in the repo directory. */
export function nodeEvalArgs(body: string): string[] {
  return ['-e', `${REQUIRE_TS}\n${body}`];
}

/** The socket inodes of this process's open fds (from /proc/self/fd). */
export async function openSocketInodes(): Promise<Set<string>> {
  const inodes = new Set<string>();
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) inodes.add(m[1]);
  }
  return inodes;
}

/** Number of eventfds this process holds. */
export async function eventfdCount(): Promise<number> {
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target === 'anon_inode:[eventfd]') n++;
  }
  return n;
}

/** Number of threads of this process. */
export async function threadCount(): Promise<number> {
  return (await readdir('/proc/self/task')).length;
}

/** Parse the all-kinds fixture's output line: `parent=1 exec=2 ...`. */
export function parsePids(line: string): Record<string, number> {
  const pids: Record<string, number> = {};
  for (const kv of line.trim().split(/\s+/)) {
    const [k, v] = kv.split('=');
    pids[k] = Number(v);
  }
  return pids;
}
