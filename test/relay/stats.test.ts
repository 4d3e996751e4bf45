/** The stats file's text: every name once, in the documented order, then the registrants. */
import type { Registrant } from '../../src/relay/registry';
import { STATS_NAMES, renderStats, statsLine, type DaemonStats } from '../../src/relay/stats';

const stats = Object.fromEntries(
  STATS_NAMES.map((name, i) => [name, i * 10]),
) as unknown as DaemonStats;

test('one "name value" line per counter, in order, then three lines per registrant', () => {
  const registrants: Registrant[] = [
    { id: 42, pidfd: -1, comm: 'a', counters: { sent: 5, lost: 2, failed: 1, lastErrno: 1 } },
    { id: 7, pidfd: -1, comm: 'b', counters: { sent: 3, lost: 0, failed: 0, lastErrno: 0 } },
  ];
  const lines = renderStats(stats, registrants).split('\n');
  expect(lines.pop()).toBe('');
  expect(lines.slice(0, STATS_NAMES.length)).toEqual(STATS_NAMES.map((n, i) => `${n} ${i * 10}`));
  expect(lines.slice(STATS_NAMES.length)).toEqual([
    'registrant.42.signals_sent 5',
    'registrant.42.signals_lost 2',
    'registrant.42.signals_failed 1',
    'registrant.7.signals_sent 3',
    'registrant.7.signals_lost 0',
    'registrant.7.signals_failed 0',
  ]);
  expect(new Set(STATS_NAMES).size).toBe(STATS_NAMES.length);
});

test('the shutdown log line names every counter', () => {
  expect(statsLine(stats)).toBe(STATS_NAMES.map((n, i) => `${n}=${i * 10}`).join(' '));
});
