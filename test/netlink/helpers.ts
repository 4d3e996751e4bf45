/**
 * Helpers of the netlink tests alone: collecting a connector's events, counting this process's
 * sockets, eventfds and threads, and reading the all-kinds fixture's output. Waiting, children,
 * fixtures and temp dirs: test/support.
 */
import { readdir, readlink } from 'node:fs/promises';
import type { ProcConnector, ProcEvent } from '../../src/netlink';

/** Collects every event a connector emits. */
export function collect(connector: ProcConnector): ProcEvent[] {
  const events: ProcEvent[] = [];
  connector.on('events', (batch) => {
    for (const e of batch) events.push(e);
  });
  return events;
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
