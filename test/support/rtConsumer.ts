/**
 * The output of test/fixtures/rt_consumer, the registrant the relay, daemon and deploy tests and
 * the bench run: "ready", then one line per signal taken.
 */

/** One signal as rt_consumer prints it: `sig=<n> code=<si_code> pid=<si_pid> val=<si_value>`. */
export interface ReceivedSignal {
  sig: number;
  code: number;
  pid: number;
  val: number;
}

const LINE = /^sig=(\d+) code=(-?\d+) pid=(-?\d+) val=(-?\d+)$/;

/** Parses one signal line; throws on anything else. */
export function parseSignalLine(line: string): ReceivedSignal {
  const m = LINE.exec(line);
  if (m === null) throw new Error(`unexpected consumer output: ${JSON.stringify(line)}`);
  return { sig: Number(m[1]), code: Number(m[2]), pid: Number(m[3]), val: Number(m[4]) };
}

/** The signal lines among `lines` (others, such as "ready", are skipped). */
export function parseSignals(lines: readonly string[]): ReceivedSignal[] {
  return lines.filter((line) => LINE.test(line)).map(parseSignalLine);
}
