/**
 * `relayfork watch`: print live proc connector events, one line each, like forkstat. The user's
 * quick check that the kernel side works on their machine or in their container.
 *
 * Text lines (stdout):
 *   TIME            KIND     DETAILS
 *   17:41:18.123456 fork     parent=812 child=9001
 *   17:41:18.123470 fork     parent=700 child=812/9002 thread
 *   17:41:18.124001 exec     pid=9001
 *   17:41:18.125210 exit     pid=9001 status=0 parent=812
 * A task is shown as TGID, or TGID/TID when it is not its thread group's leader. TIME is the
 * kernel's timestamp (CLOCK_MONOTONIC) converted to local wall-clock time. For a thread, the
 * kernel reports as parent the parent of the thread's process (copy_process() makes threads
 * siblings), not the thread that created it.
 *
 * --json prints one object per line: the event's fields (src/netlink/events.ts) plus `time`
 * (ISO 8601, UTC); `timestampNs` is a decimal string, because nanoseconds since boot exceed
 * Number's exact range after 104 days of uptime.
 *
 * On SIGINT/SIGTERM it prints the counters to stderr and returns 0. Errors print one line to
 * stderr: 2 for a bad option, 1 for a connector failure.
 */
import {
  PROC_EVENT_KINDS,
  ProcConnector,
  describeProcConnectorError,
  type ProcConnectorCounters,
  type ProcEvent,
  type ProcEventKind,
} from './netlink';

export interface WatchOptions {
  /** Comma-separated kinds (default: all). */
  events?: string;
  /** One JSON object per line instead of text. */
  json?: boolean;
  /** SO_RCVBUFFORCE value for the socket (default: the library's). */
  receiveBuffer?: number;
}

const PREFIX = 'relayfork watch:';

/** Run until SIGINT/SIGTERM (or a connector error); returns the process exit code. */
export async function runWatch(options: WatchOptions = {}): Promise<number> {
  const kinds = parseKinds(options.events);
  if (typeof kinds === 'string') {
    process.stderr.write(`${PREFIX} ${kinds}\n`);
    return 2;
  }
  let connector: ProcConnector;
  try {
    connector = new ProcConnector({ events: kinds, receiveBufferBytes: options.receiveBuffer });
  } catch (err) {
    process.stderr.write(`${PREFIX} ${describeProcConnectorError(err)}\n`);
    return 2;
  }

  const format = options.json ? formatJson : formatText;
  const wallOffsetNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
  let stopReason: 'signal' | 'stdout closed' | Error | undefined;
  let wake: (() => void) | undefined;
  const stopped = new Promise<void>((resolve) => {
    wake = resolve;
  });
  const stop = (reason: NonNullable<typeof stopReason>): void => {
    stopReason ??= reason;
    wake?.();
  };
  const onSignal = (): void => stop('signal');
  const onStdoutError = (err: NodeJS.ErrnoException): void =>
    stop(err.code === 'EPIPE' ? 'stdout closed' : err);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.stdout.on('error', onStdoutError);

  // Events arrive while open() and selfTest() confirm the subscription, before the "listening"
  // header can name it: they are held until the header is out, so it comes first.
  let held: ProcEvent[] | undefined = [];
  const print = (batch: readonly ProcEvent[]): void => {
    let out = '';
    for (const event of batch) out += format(event, wallOffsetNs) + '\n';
    if (out !== '') process.stdout.write(out);
  };
  connector.on('events', (batch) => {
    if (held) held.push(...batch);
    else print(batch);
  });
  connector.on('loss', ({ overruns, dropped }) => {
    process.stderr.write(
      `${PREFIX} the socket overflowed: ${dropped} events lost so far (${overruns} overruns); a larger receive buffer absorbs longer bursts\n`,
    );
  });
  connector.on('error', (err) => stop(err));

  try {
    try {
      await connector.open();
      await connector.selfTest();
    } catch (err) {
      process.stderr.write(`${PREFIX} ${describeProcConnectorError(err)}\n`);
      await connector.close().catch(() => undefined);
      return 1;
    }
    process.stderr.write(
      `${PREFIX} listening for ${kinds.join(',')} (${connector.subscription} subscription); Ctrl-C prints the counters\n`,
    );
    print(held);
    held = undefined;
    await stopped;
    let code = stopReason instanceof Error ? 1 : 0;
    if (stopReason instanceof Error) {
      process.stderr.write(`${PREFIX} ${describeProcConnectorError(stopReason)}\n`);
    }
    try {
      await connector.close();
    } catch (err) {
      process.stderr.write(`${PREFIX} ${describeProcConnectorError(err)}\n`);
      code = 1;
    }
    process.stderr.write(formatCounters(connector.counters, kinds));
    return code;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.stdout.off('error', onStdoutError);
  }
}

/** The kinds named by --events, or a one-line complaint. */
export function parseKinds(events: string | undefined): ProcEventKind[] | string {
  if (events === undefined) return [...PROC_EVENT_KINDS];
  const names = events
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (names.length === 0) {
    return `--events names no kind; choose from ${PROC_EVENT_KINDS.join(',')}`;
  }
  const kinds: ProcEventKind[] = [];
  for (const name of names) {
    const kind = PROC_EVENT_KINDS.find((k) => k === name);
    if (kind === undefined) {
      return `unknown event kind '${name}' in --events; choose from ${PROC_EVENT_KINDS.join(',')}`;
    }
    if (!kinds.includes(kind)) kinds.push(kind);
  }
  return kinds;
}

/** TGID, or TGID/TID for a thread that is not its group's leader. */
function task(tgid: number, pid: number): string {
  return pid === tgid ? String(tgid) : `${tgid}/${pid}`;
}

/** proc_event.exit.exit_code is the wait(2) status (task->exit_code). */
export function describeExitCode(exitCode: number): string {
  const signal = exitCode & 0x7f;
  if (signal === 0) return `status=${(exitCode >> 8) & 0xff}`;
  return `signal=${signal}${exitCode & 0x80 ? ' core' : ''}`;
}

function wallTime(timestampNs: bigint, wallOffsetNs: bigint): Date {
  return new Date(Number((timestampNs + wallOffsetNs) / 1_000_000n));
}

function clock(timestampNs: bigint, wallOffsetNs: bigint): string {
  const wallNs = timestampNs + wallOffsetNs;
  const d = new Date(Number(wallNs / 1_000_000n));
  const micros = String((wallNs / 1000n) % 1_000_000n).padStart(6, '0');
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${micros}`;
}

export function formatText(event: ProcEvent, wallOffsetNs: bigint): string {
  const head = `${clock(event.timestampNs, wallOffsetNs)} ${event.kind.padEnd(8)}`;
  switch (event.kind) {
    case 'fork': {
      const thread = event.childPid !== event.childTgid ? ' thread' : '';
      return `${head} parent=${task(event.parentTgid, event.parentPid)} child=${task(event.childTgid, event.childPid)}${thread}`;
    }
    case 'exec':
    case 'sid':
      return `${head} pid=${task(event.processTgid, event.processPid)}`;
    case 'uid':
      return `${head} pid=${task(event.processTgid, event.processPid)} ruid=${event.ruid} euid=${event.euid}`;
    case 'gid':
      return `${head} pid=${task(event.processTgid, event.processPid)} rgid=${event.rgid} egid=${event.egid}`;
    case 'ptrace': {
      const tracer =
        event.tracerTgid === 0 ? '0 (detach)' : task(event.tracerTgid, event.tracerPid);
      return `${head} pid=${task(event.processTgid, event.processPid)} tracer=${tracer}`;
    }
    case 'comm':
      return `${head} pid=${task(event.processTgid, event.processPid)} comm=${JSON.stringify(event.comm)}`;
    case 'coredump':
      return `${head} pid=${task(event.processTgid, event.processPid)} parent=${task(event.parentTgid, event.parentPid)}`;
    case 'exit':
      return `${head} pid=${task(event.processTgid, event.processPid)} ${describeExitCode(event.exitCode)} parent=${task(event.parentTgid, event.parentPid)}`;
  }
}

export function formatJson(event: ProcEvent, wallOffsetNs: bigint): string {
  return JSON.stringify(
    { time: wallTime(event.timestampNs, wallOffsetNs).toISOString(), ...event },
    (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value),
  );
}

function formatCounters(counters: ProcConnectorCounters, kinds: readonly ProcEventKind[]): string {
  const received = kinds.map((k) => `${k}=${counters.received[k]}`).join(' ');
  const total = kinds.reduce((sum, k) => sum + counters.received[k], 0);
  return (
    `${PREFIX} received ${received} (total ${total})\n` +
    `${PREFIX} overruns=${counters.overruns} dropped=${counters.dropped} ` +
    `sequence-gaps=${counters.sequenceGaps} malformed=${counters.malformed}\n`
  );
}
