/**
 * Typed proc connector events: one member of the union per `enum what` value of
 * `struct proc_event` (include/uapi/linux/cn_proc.h, Linux 6.x). Field names follow the kernel's,
 * in camelCase. Every event carries the CPU that emitted it and the kernel's timestamp
 * (`ktime_get_ns()`, nanoseconds since boot).
 */
export interface ProcEventBase {
  /** The CPU that emitted the event (proc_event.cpu). */
  cpu: number;
  /** proc_event.timestamp_ns: ktime_get_ns() at the event, nanoseconds since boot. */
  timestampNs: bigint;
}

/** A task's two ids: its own (the thread id, "pid") and its thread group's ("tgid", the PID). */
export interface ProcessIds {
  processPid: number;
  processTgid: number;
}

export interface ForkEvent extends ProcEventBase {
  kind: 'fork';
  parentPid: number;
  parentTgid: number;
  childPid: number;
  childTgid: number;
}
export interface ExecEvent extends ProcEventBase, ProcessIds {
  kind: 'exec';
}
export interface UidEvent extends ProcEventBase, ProcessIds {
  kind: 'uid';
  ruid: number;
  euid: number;
}
export interface GidEvent extends ProcEventBase, ProcessIds {
  kind: 'gid';
  rgid: number;
  egid: number;
}
export interface SidEvent extends ProcEventBase, ProcessIds {
  kind: 'sid';
}
export interface PtraceEvent extends ProcEventBase, ProcessIds {
  kind: 'ptrace';
  tracerPid: number;
  tracerTgid: number;
}
export interface CommEvent extends ProcEventBase, ProcessIds {
  kind: 'comm';
  comm: string;
}
export interface CoredumpEvent extends ProcEventBase, ProcessIds {
  kind: 'coredump';
  parentPid: number;
  parentTgid: number;
}
export interface ExitEvent extends ProcEventBase, ProcessIds {
  kind: 'exit';
  exitCode: number;
  exitSignal: number;
  parentPid: number;
  parentTgid: number;
}

export type ProcEvent =
  | ForkEvent
  | ExecEvent
  | UidEvent
  | GidEvent
  | SidEvent
  | PtraceEvent
  | CommEvent
  | CoredumpEvent
  | ExitEvent;

export type ProcEventKind = ProcEvent['kind'];

export const PROC_EVENT_KINDS: readonly ProcEventKind[] = [
  'fork',
  'exec',
  'uid',
  'gid',
  'sid',
  'ptrace',
  'comm',
  'coredump',
  'exit',
];
