/**
 * Registrations that survive a daemon restart (an upgrade, a crash, `systemctl restart`).
 *
 * The state file holds the signal in effect and each registrant as its id plus the task's start
 * time (/proc/<id>/stat field 22): together they name one task for the whole uptime, so on
 * restore an id that now names another task (the registrant exited, the id was reused) is
 * dropped and that stranger gets nothing. The boot id is kept too: after a reboot every start
 * time means something else (and /run, the default place, is empty anyway).
 *
 * Written on every change, atomically (a temp file in the same directory, fsync, rename), before
 * the write(2) that made the change returns. A file that is missing, corrupt or not ours is
 * logged and ignored, never fatal, and never trusted beyond its format: every id is checked
 * against the running system before it is registered again.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isAcceptedSignal } from './patchRules';
import { readBootId, readTaskStat } from './procStat';
import type { Registry } from './registry';

/** The default place: /run is a tmpfs, emptied at boot, like the registrations' meaning. */
export const DEFAULT_STATE_FILE = '/run/relayfork.state';

const FORMAT = 'relayfork-state/1';
/** More registrants than any daemon can hold (one pidfd each): a larger list is not ours. */
const MAX_SAVED_REGISTRANTS = 1 << 22;
/** A state file larger than this is not ours either (about 40 bytes per registrant). */
const MAX_STATE_FILE_BYTES = 256 * 1024 * 1024;

export interface SavedRegistrant {
  id: number;
  /** /proc/<id>/stat field 22 when the id was registered. */
  startTime: number;
}

export interface SavedState {
  bootId: string;
  signal: number;
  /** Oldest first, the registry's order. */
  registrants: SavedRegistrant[];
}

export type LoadedState =
  | { kind: 'loaded'; state: SavedState }
  | { kind: 'missing' }
  | { kind: 'unusable'; reason: string };

export function encodeState(state: SavedState): string {
  return `${JSON.stringify({ format: FORMAT, ...state })}\n`;
}

/** Parse a state file's text; anything off is a reason, never an exception. */
export function decodeState(text: string): SavedState | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'not JSON';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not an object';
  const v = value as Record<string, unknown>;
  if (v.format !== FORMAT) return `not a ${FORMAT} file`;
  if (typeof v.bootId !== 'string' || !/^[0-9a-f-]{1,64}$/.test(v.bootId)) return 'bad bootId';
  if (!Number.isSafeInteger(v.signal) || !isAcceptedSignal(v.signal as number)) {
    return 'bad signal';
  }
  if (!Array.isArray(v.registrants) || v.registrants.length > MAX_SAVED_REGISTRANTS) {
    return 'bad registrants';
  }
  const registrants: SavedRegistrant[] = [];
  const seen = new Set<number>();
  for (const r of v.registrants as unknown[]) {
    if (typeof r !== 'object' || r === null) return 'bad registrant';
    const { id, startTime } = r as Record<string, unknown>;
    if (!Number.isSafeInteger(id) || (id as number) <= 0) return 'bad registrant id';
    if (!Number.isSafeInteger(startTime) || (startTime as number) < 0) {
      return 'bad registrant startTime';
    }
    if (seen.has(id as number)) return 'duplicate registrant id';
    seen.add(id as number);
    registrants.push({ id: id as number, startTime: startTime as number });
  }
  return { bootId: v.bootId, signal: v.signal as number, registrants };
}

export class StateFile {
  /** Successful writes (the `state-file-writes` counter). */
  writes = 0;
  /** Writes that failed (each is logged by the caller). */
  failedWrites = 0;

  constructor(readonly path: string) {}

  load(): LoadedState {
    let text: string;
    try {
      const st = fs.statSync(this.path);
      if (!st.isFile()) return { kind: 'unusable', reason: 'not a regular file' };
      if (st.size > MAX_STATE_FILE_BYTES) return { kind: 'unusable', reason: 'too large' };
      text = fs.readFileSync(this.path, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return { kind: 'missing' };
      return { kind: 'unusable', reason: err instanceof Error ? err.message : String(err) };
    }
    const decoded = decodeState(text);
    return typeof decoded === 'string'
      ? { kind: 'unusable', reason: decoded }
      : { kind: 'loaded', state: decoded };
  }

  /** Replace the file atomically: temp file, fsync, rename, fsync of the directory. */
  save(state: SavedState): void {
    const dir = path.dirname(this.path);
    const temp = path.join(dir, `.${path.basename(this.path)}.${process.pid}.tmp`);
    try {
      const fd = fs.openSync(temp, 'w', 0o600);
      try {
        fs.writeSync(fd, encodeState(state));
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(temp, this.path);
      syncDirectory(dir);
      this.writes++;
    } catch (err) {
      this.failedWrites++;
      fs.rmSync(temp, { force: true });
      throw err;
    }
  }
}

function syncDirectory(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    fs.closeSync(fd);
  }
}

/** Why a saved registrant was not restored. */
export type DropReason = 'exited' | 'id now names another task' | 'could not register';

export interface RestoreReport {
  restored: number[];
  dropped: Array<{ id: number; reason: DropReason }>;
  /** Whether the saved signal was put back. */
  signalRestored: boolean;
}

/**
 * Register again every saved id that still names the same task (same start time), oldest first
 * so the delivery order is the one before the restart. The start time is read again after the
 * pidfd is open: if the id still named the saved task then, the pidfd holds that very task.
 */
export function restoreRegistrations(
  registry: Registry,
  saved: SavedState,
  setSignal: (signal: number) => void,
): RestoreReport {
  const report: RestoreReport = { restored: [], dropped: [], signalRestored: false };
  if (saved.bootId !== readBootId()) {
    // Saved before a reboot: every id names somebody else now.
    for (const { id } of saved.registrants) report.dropped.push({ id, reason: 'exited' });
    return report;
  }
  setSignal(saved.signal);
  report.signalRestored = true;
  for (const { id, startTime } of saved.registrants) {
    const before = readTaskStat(id);
    if (before === undefined || before.state === 'Z' || before.state === 'X') {
      report.dropped.push({ id, reason: 'exited' });
      continue;
    }
    if (before.startTime !== startTime) {
      report.dropped.push({ id, reason: 'id now names another task' });
      continue;
    }
    let outcome: string;
    try {
      outcome = registry.register(id);
    } catch {
      outcome = 'failed';
    }
    if (outcome !== 'registered' && outcome !== 'already') {
      report.dropped.push({ id, reason: outcome === 'failed' ? 'could not register' : 'exited' });
      continue;
    }
    const after = readTaskStat(id);
    if (after?.startTime !== startTime) {
      registry.unregister(id);
      report.dropped.push({ id, reason: 'id now names another task' });
      continue;
    }
    report.restored.push(id);
  }
  return report;
}

/**
 * Keeps the state file equal to the registry and the signal: saved on every registration,
 * unregistration and signal change, synchronously, so a change is on disk before the write(2)
 * that made it returns. The file stays when the daemon stops: the next start restores from it.
 */
export class StatePersister {
  /** Start time of each registered id, read when it was registered. */
  private readonly startTimes = new Map<number, number>();
  private attached = false;
  private readonly onRegistered = ({ id }: { id: number }): void => {
    const stat = readTaskStat(id);
    const registrant = this.registry.get(id);
    // Read after the pidfd was opened and checked live again: the start time is the pidfd's task.
    if (stat !== undefined && registrant !== undefined && !this.registry.hasExited(registrant)) {
      this.startTimes.set(id, stat.startTime);
    }
    this.save();
  };
  private readonly onUnregistered = ({ id }: { id: number }): void => {
    this.startTimes.delete(id);
    this.save();
  };

  constructor(
    private readonly registry: Registry,
    private readonly file: StateFile,
    private readonly currentSignal: () => number,
    private readonly onSaveFailed: (err: unknown) => void,
  ) {}

  /** Take the registry as it is now (after a restore), save it, and follow its changes. */
  attach(): void {
    if (this.attached) return;
    this.attached = true;
    for (const id of this.registry.ids()) {
      const stat = readTaskStat(id);
      if (stat !== undefined) this.startTimes.set(id, stat.startTime);
    }
    this.registry.on('registered', this.onRegistered);
    this.registry.on('unregistered', this.onUnregistered);
    this.save();
  }

  /** The signal in effect changed. */
  signalChanged(): void {
    if (this.attached) this.save();
  }

  /** Stop following the registry (idempotent); the file stays. */
  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    this.registry.off('registered', this.onRegistered);
    this.registry.off('unregistered', this.onUnregistered);
  }

  private save(): void {
    const registrants: SavedRegistrant[] = [];
    // ids() is newest first; the file keeps the registry's oldest-first order.
    for (const id of this.registry.ids().reverse()) {
      const startTime = this.startTimes.get(id);
      if (startTime !== undefined) registrants.push({ id, startTime });
    }
    try {
      this.file.save({ bootId: readBootId(), signal: this.currentSignal(), registrants });
    } catch (err) {
      this.onSaveFailed(err);
    }
  }
}
