/**
 * The state file: its format (never trusted beyond it), atomic saves, and restoring only the ids
 * that still name the saved task, against real processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseTaskStat, readBootId, readTaskStat } from '../../src/relay/procStat';
import { Registry } from '../../src/relay/registry';
import {
  StateFile,
  StatePersister,
  decodeState,
  encodeState,
  restoreRegistrations,
  type SavedState,
} from '../../src/relay/stateFile';

let dir: string;
const children: ChildProcess[] = [];

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'relayfork-state-'));
});

afterAll(() => {
  for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

function sleeper(): ChildProcess & { pid: number } {
  const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
  children.push(child);
  if (child.pid === undefined) throw new Error('sleep did not start');
  return child as ChildProcess & { pid: number };
}

async function exitOf(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((resolve) => child.once('exit', resolve));
}

describe('/proc/<id>/stat', () => {
  test('fields after a command name holding spaces and parentheses', () => {
    const text =
      '4242 (a) b (c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200';
    expect(parseTaskStat(4242, text)).toEqual({
      id: 4242,
      state: 'S',
      parentPid: 17,
      startTime: 987654,
    });
    expect(parseTaskStat(1, 'garbage')).toBeUndefined();
    expect(parseTaskStat(1, '1 (x) S')).toBeUndefined();
  });

  test('a live process and one of its threads: same start time, parent is the spawner', () => {
    const me = readTaskStat(process.pid);
    expect(me?.parentPid).toBe(process.ppid);
    const child = sleeper();
    const stat = readTaskStat(child.pid);
    expect(stat?.parentPid).toBe(process.pid);
    expect(stat!.startTime).toBeGreaterThanOrEqual(me!.startTime);
    const threads = fs.readdirSync('/proc/self/task').map(Number);
    for (const tid of threads) expect(readTaskStat(tid)).toBeDefined();
    expect(readTaskStat(0x3fffffff)).toBeUndefined();
  });
});

describe('the format', () => {
  const good: SavedState = {
    bootId: readBootId(),
    signal: 40,
    registrants: [
      { id: 12, startTime: 100 },
      { id: 13, startTime: 0 },
    ],
  };

  test('round-trips', () => {
    expect(decodeState(encodeState(good))).toEqual(good);
  });

  test.each([
    ['not JSON', '{'],
    ['not an object', '[]'],
    ['not ours', JSON.stringify({ ...good, format: 'other/1' })],
    ['no format', JSON.stringify(good)],
    ['signal out of range', encodeState({ ...good, signal: 64 })],
    ['signal 32', encodeState({ ...good, signal: 32 })],
    ['bootId junk', encodeState({ ...good, bootId: '../../etc' })],
    ['id 0', encodeState({ ...good, registrants: [{ id: 0, startTime: 1 }] })],
    ['id negative', encodeState({ ...good, registrants: [{ id: -5, startTime: 1 }] })],
    ['id fractional', encodeState({ ...good, registrants: [{ id: 1.5, startTime: 1 }] })],
    ['startTime missing', encodeState({ ...good, registrants: [{ id: 5 } as never] })],
    [
      'duplicate id',
      encodeState({
        ...good,
        registrants: [
          { id: 5, startTime: 1 },
          { id: 5, startTime: 2 },
        ],
      }),
    ],
    [
      'registrants not a list',
      JSON.stringify({ format: 'relayfork-state/1', ...good, registrants: 3 }),
    ],
  ])('refuses %s', (_name, text) => {
    expect(typeof decodeState(text)).toBe('string');
  });
});

describe('StateFile', () => {
  test('saves atomically (0600, no temp file left) and loads what it saved', () => {
    const file = new StateFile(path.join(dir, 'atomic.state'));
    const state: SavedState = { bootId: readBootId(), signal: 41, registrants: [] };
    file.save(state);
    file.save({ ...state, signal: 42 });
    expect(file.writes).toBe(2);
    expect(fs.statSync(file.path).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(dir).filter((n) => n.includes('atomic'))).toEqual(['atomic.state']);
    expect(file.load()).toEqual({ kind: 'loaded', state: { ...state, signal: 42 } });
  });

  test('a missing, corrupt or foreign file is reported, never thrown', () => {
    expect(new StateFile(path.join(dir, 'none')).load()).toEqual({ kind: 'missing' });
    fs.writeFileSync(path.join(dir, 'corrupt'), '{"format":"relayfork-state/1",');
    expect(new StateFile(path.join(dir, 'corrupt')).load()).toEqual({
      kind: 'unusable',
      reason: 'not JSON',
    });
    fs.mkdirSync(path.join(dir, 'adir'));
    expect(new StateFile(path.join(dir, 'adir')).load().kind).toBe('unusable');
  });

  test('a save that cannot be written throws and is counted, leaving nothing behind', () => {
    const file = new StateFile(path.join(dir, 'no-such-dir', 'x.state'));
    expect(() => file.save({ bootId: readBootId(), signal: 40, registrants: [] })).toThrow();
    expect(file.failedWrites).toBe(1);
  });
});

describe('restoring', () => {
  let registry: Registry;
  beforeEach(() => {
    registry = new Registry();
  });
  afterEach(() => registry.close());

  test('only ids that still name the saved task come back, in the saved order', async () => {
    const [a, b, gone, reused] = [sleeper(), sleeper(), sleeper(), sleeper()];
    const startOf = (pid: number): number => readTaskStat(pid)!.startTime;
    const saved: SavedState = {
      bootId: readBootId(),
      signal: 45,
      registrants: [
        { id: b.pid, startTime: startOf(b.pid) },
        { id: gone.pid, startTime: startOf(gone.pid) },
        // The same id, but an earlier task's start time: a stranger has it now.
        { id: reused.pid, startTime: startOf(reused.pid) - 1 },
        { id: a.pid, startTime: startOf(a.pid) },
      ],
    };
    gone.kill('SIGKILL');
    await exitOf(gone);
    let signal = 40;
    const report = restoreRegistrations(registry, saved, (n) => (signal = n));
    expect(report.restored).toEqual([b.pid, a.pid]);
    expect(report.dropped).toEqual([
      { id: gone.pid, reason: 'exited' },
      { id: reused.pid, reason: 'id now names another task' },
    ]);
    expect(registry.ids()).toEqual([a.pid, b.pid]); // newest first, as before the restart
    expect(signal).toBe(45);
    expect(report.signalRestored).toBe(true);
  });

  test('a file from another boot restores nothing, not even the signal', () => {
    const a = sleeper();
    const saved: SavedState = {
      bootId: '00000000-0000-0000-0000-000000000000',
      signal: 45,
      registrants: [{ id: a.pid, startTime: readTaskStat(a.pid)!.startTime }],
    };
    let signal = 40;
    const report = restoreRegistrations(registry, saved, (n) => (signal = n));
    expect(report.restored).toEqual([]);
    expect(report.signalRestored).toBe(false);
    expect(registry.size).toBe(0);
    expect(signal).toBe(40);
  });

  test('the persister writes every change before it returns, and a restore reads it back', () => {
    const file = new StateFile(path.join(dir, 'persist.state'));
    let signal = 40;
    const failures: unknown[] = [];
    const persister = new StatePersister(
      registry,
      file,
      () => signal,
      (e) => failures.push(e),
    );
    const [a, b] = [sleeper(), sleeper()];
    persister.attach();
    expect(registry.register(a.pid)).toBe('registered');
    expect(registry.register(b.pid)).toBe('registered');
    registry.unregister(a.pid);
    registry.register(a.pid);
    signal = 44;
    persister.signalChanged();
    const loaded = file.load();
    if (loaded.kind !== 'loaded') throw new Error(`state file: ${JSON.stringify(loaded)}`);
    expect(loaded.state.signal).toBe(44);
    expect(loaded.state.registrants.map((r) => r.id)).toEqual([b.pid, a.pid]);
    expect(loaded.state.registrants[0].startTime).toBe(readTaskStat(b.pid)!.startTime);
    expect(file.writes).toBe(6); // attach, 2 registrations, 1 removal, 1 registration, signal
    expect(failures).toEqual([]);
    persister.detach();

    // A new daemon: a new registry restored from the file.
    const next = new Registry();
    try {
      const report = restoreRegistrations(next, loaded.state, () => undefined);
      expect(report.restored).toEqual([b.pid, a.pid]);
      expect(next.ids()).toEqual(registry.ids());
    } finally {
      next.close();
    }
  });
});
