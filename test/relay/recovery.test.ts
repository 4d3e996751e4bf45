/**
 * The pieces of lost-fork recovery: the /proc scan (real processes and threads), the clock
 * conversion, the ring of recent forks, and the plan (dedupe, si_pid, processes-only).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  monotonicNsToStartTicks,
  planRecovery,
  scanTasksStartedSince,
  type FoundTask,
} from '../../src/relay/recovery';
import { readTaskStat } from '../../src/relay/procStat';

const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

test('the scan finds tasks started since a tick, threads included, and not older ones', async () => {
  const before = readTaskStat(process.pid)!.startTime;
  const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
  children.push(child);
  const pid = child.pid!;
  const since = readTaskStat(pid)!.startTime;
  const found = scanTasksStartedSince(since);
  const mine = found.find((t) => t.tid === pid);
  expect(mine).toEqual({ tid: pid, tgid: pid, parentPid: process.pid, startTime: since });
  expect(found.every((t) => t.startTime >= since)).toBe(true);
  if (before < since) expect(found.some((t) => t.tid === process.pid)).toBe(false);
  // This process's threads started with it: all found by a scan from its start.
  const ours = scanTasksStartedSince(before).filter((t) => t.tgid === process.pid);
  expect(ours.length).toBeGreaterThan(1);
  expect(ours.some((t) => t.tid !== t.tgid)).toBe(true);
});

test('a proc connector timestamp (CLOCK_MONOTONIC) maps to the start-time tick of that instant', () => {
  const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
  children.push(child);
  const nowNs = process.hrtime.bigint();
  const started = readTaskStat(child.pid!)!.startTime;
  // The child started just before "now": within a few ticks (a loaded machine) of the conversion.
  const ticks = monotonicNsToStartTicks(nowNs);
  expect(ticks).toBeGreaterThanOrEqual(started - 1);
  expect(ticks - started).toBeLessThan(100);
});

test('the plan: received and own tasks skipped, si_pid as the relay sends it, oldest first', () => {
  const task = (tid: number, tgid: number, parentPid: number, startTime: number): FoundTask => ({
    tid,
    tgid,
    parentPid,
    startTime,
  });
  const tasks = [
    task(30, 30, 7, 5), // a process, parent 7
    task(31, 30, 7, 4), // a thread of 30: si_pid is its process
    task(40, 40, 1, 3), // received already
    task(50, 99, 1, 3), // a thread of the daemon itself
  ];
  const plan = planRecovery(tasks, new Set([40]), 10, { processesOnly: false, selfPid: 99 });
  expect(plan.forks.map(({ parent, child }) => [parent, child])).toEqual([
    [30, 31],
    [7, 30],
  ]);
  expect(plan.unrecoverable).toBe(8);
  const only = planRecovery(tasks, new Set([40]), 1, { processesOnly: true, selfPid: 99 });
  expect(only.forks.map((f) => f.child)).toEqual([30]);
  expect(only.unrecoverable).toBe(0);
});
