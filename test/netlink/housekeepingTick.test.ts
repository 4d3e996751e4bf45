/**
 * The receive worker's fast-path clock (src/netlink/receiveWorker.ts): ticks of 2^22 ns taken
 * from each event's timestamp_ns, by which it decides that housekeeping is due. A wrong shift or
 * mask would make housekeeping never due (registrants' exits unseen under load) or due at every
 * fork (the CPU cost the clock exists to avoid).
 */
import {
  HOUSEKEEPING_MS,
  HOUSEKEEPING_TICKS,
  TICK_SHIFT,
  eventTick,
  ticksSince,
} from '../../src/netlink/receiveWorker';

/** timestamp_ns (a BigInt) as the two int32 halves the worker reads from the datagram. */
function halves(ns: bigint): [number, number] {
  const lo = Number(BigInt.asIntN(32, ns & 0xffffffffn));
  const hi = Number(BigInt.asIntN(32, ns >> 32n));
  return [lo, hi];
}

function tickAt(ns: bigint): number {
  const [lo, hi] = halves(ns);
  return eventTick(lo, hi);
}

const MS = 1_000_000n;

test('HOUSEKEEPING_TICKS spans HOUSEKEEPING_MS, rounded up by less than one tick', () => {
  const spanNs = HOUSEKEEPING_TICKS * 2 ** TICK_SHIFT;
  expect(spanNs).toBeGreaterThanOrEqual(HOUSEKEEPING_MS * 1e6);
  expect(spanNs - 2 ** TICK_SHIFT).toBeLessThan(HOUSEKEEPING_MS * 1e6);
});

test.each([
  ['just after boot', 5_000n * MS],
  ['where the low word wraps (2^32 ns)', 2n ** 32n - 50n * MS],
  ['where the low word is negative as an int32', 2n ** 31n + 7n],
  ['a month up', 30n * 86_400_000n * MS],
  ['where the 31-bit tick wraps (2^53 ns, 104 days)', 2n ** 53n - 60n * MS],
])('%s: housekeeping is due after HOUSEKEEPING_MS of events, not before', (_where, start) => {
  const from = tickAt(start);
  expect(from).toBeGreaterThanOrEqual(0);
  const at = (ms: bigint): number => ticksSince(from, tickAt(start + ms * MS));
  expect(at(0n)).toBe(0);
  expect(at(BigInt(HOUSEKEEPING_MS) - 10n)).toBeLessThan(HOUSEKEEPING_TICKS);
  expect(at(BigInt(HOUSEKEEPING_MS) + 5n)).toBeGreaterThanOrEqual(HOUSEKEEPING_TICKS);
  expect(at(1000n)).toBeGreaterThanOrEqual(HOUSEKEEPING_TICKS);
  // Monotonic over a second of events, wrap or not.
  let last = 0;
  for (let ms = 0n; ms <= 1000n; ms += 7n) {
    expect(at(ms)).toBeGreaterThanOrEqual(last);
    last = at(ms);
  }
});
