/**
 * What /proc says about one task: the fields of /proc/<id>/stat that identify it (proc(5);
 * fs/proc/array.c do_task_stat, Linux 6.x). A thread id works as well as a process id: /proc
 * resolves any task id, though only thread-group leaders are listed.
 */
import fs from 'node:fs';

/** 1-based field numbers of /proc/<id>/stat (proc(5)). */
const STAT_FIELD_STATE = 3;
const STAT_FIELD_PPID = 4;
const STAT_FIELD_STARTTIME = 22;

export interface TaskStat {
  /** The task id read. */
  id: number;
  /** Field 3: R, S, D, Z (zombie), X (dead)... */
  state: string;
  /** Field 4: the parent process. */
  parentPid: number;
  /**
   * Field 22: when the task started, in clock ticks (USER_HZ, 100 a second) since boot. With the
   * id, it names one task for the whole uptime: a reused id has a later start time.
   */
  startTime: number;
}

/**
 * Parse the text of /proc/<id>/stat. The command name (field 2) is in parentheses and may itself
 * hold spaces and ')', so the fields after it are counted from the last ')'.
 */
export function parseTaskStat(id: number, text: string): TaskStat | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const rest = text.slice(close + 2).split(' ');
  // rest[0] is field 3.
  const field = (n: number): string | undefined => rest[n - STAT_FIELD_STATE];
  const state = field(STAT_FIELD_STATE);
  const parentPid = Number(field(STAT_FIELD_PPID));
  const startTime = Number(field(STAT_FIELD_STARTTIME));
  if (state === undefined || !Number.isSafeInteger(parentPid) || !Number.isSafeInteger(startTime)) {
    return undefined;
  }
  return { id, state, parentPid, startTime };
}

/** /proc/<id>/stat of a live or zombie task, or undefined when no task has that id. */
export function readTaskStat(id: number): TaskStat | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${id}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  return parseTaskStat(id, text);
}

/** This boot's id (/proc/sys/kernel/random/boot_id): start times mean nothing across boots. */
export function readBootId(): string {
  return fs.readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim();
}

/** The thread group (process) of task `id` (/proc/<id>/status "Tgid:"), or undefined if none. */
export function readTgid(id: number): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${id}/status`, 'latin1');
  } catch {
    return undefined;
  }
  const m = /^Tgid:\s*(\d+)$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}
