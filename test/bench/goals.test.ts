/**
 * The bench's goal lines (issue 7) from a report, without running a load: every load is judged
 * with each registrant count it ran with, the comparisons with forkstat (which signals no one)
 * with one registrant only.
 */
import { evaluateGoals, type BenchReport, type Summary } from '../../bench/relayBench';

type Figures = Pick<Summary, 'cpuPer100kS' | 'wallRatio'> & { p50?: number; p99?: number };

function summary(
  load: Summary['load'],
  registrants: number,
  condition: Summary['condition'],
  f: Figures,
): Summary {
  return {
    load,
    registrants,
    condition,
    events: 1000,
    cpuPer100kS: f.cpuPer100kS,
    idleCpuMsPerS: 0,
    wallRatio: f.wallRatio,
    latencyMs:
      f.p50 === undefined ? undefined : { p50: f.p50, p90: f.p50, p99: f.p99 ?? f.p50, max: 1 },
    receivedMin: condition === 'relayfork' || condition === 'c-relay' ? 1000 : undefined,
    receivedMax: condition === 'relayfork' || condition === 'c-relay' ? 1000 : undefined,
    lost: 0,
  };
}

/** Every load with 1 and 10 registrants; relayfork equal to the C relay unless `relayfork` says. */
function report(relayfork: Partial<Record<`${Summary['load']}/${number}`, Figures>>): BenchReport {
  const summaries: Summary[] = [];
  for (const k of [1, 10]) {
    for (const load of ['paced', 'storm', 'threads'] as const) {
      const c: Figures = { cpuPer100kS: 5, wallRatio: 1.4, p50: 1, p99: 2 };
      summaries.push(summary(load, k, 'c-relay', c));
      summaries.push(summary(load, k, 'forkstat', { cpuPer100kS: 10, wallRatio: 1.5 }));
      summaries.push(summary(load, k, 'relayfork', relayfork[`${load}/${k}`] ?? c));
    }
  }
  return {
    sizes: { registrants: [1, 10] },
    summaries,
    make: [],
    rss: { idleMiB: 0, afterStormMiB: 0 },
  } as unknown as BenchReport;
}

const failed = (r: BenchReport): string[] =>
  evaluateGoals(r)
    .filter((g) => !g.pass)
    .map((g) => g.goal);

test('at par with the C relay every goal line passes, for both registrant counts', () => {
  const goals = evaluateGoals(report({}));
  expect(goals.filter((g) => !g.pass)).toEqual([]);
  const names = goals.map((g) => g.goal);
  expect(names).toContain("latency p99 (threads, 10 registrants) <= 2x the C relay's");
  expect(names).toContain("CPU per 100k thread events, 10 registrants <= the C relay's x1.2");
  expect(names).toContain("latency p50 (storm) <= 1.3x the C relay's");
  expect(names).toContain('0 signals missed in the thread storm with 10 registrant(s)');
  // forkstat signals no one: compared with one registrant only.
  expect(names.filter((n) => n.includes('forkstat'))).toEqual([
    "CPU per 100k process forks (paced) below forkstat's",
    "CPU per 100k process forks (storm) below forkstat's",
    "storm wall-time ratio no worse than forkstat's",
  ]);
});

test('the 10-registrant thread storm is judged on its own: CPU over 1.2x and p99 over 2x fail', () => {
  expect(
    failed(report({ 'threads/10': { cpuPer100kS: 6.5, wallRatio: 1.4, p50: 1.9, p99: 4.1 } })),
  ).toEqual([
    "CPU per 100k thread events, 10 registrants <= the C relay's x1.2",
    "latency p99 (threads, 10 registrants) <= 2x the C relay's",
  ]);
});

test('process forks: p50 over 1.3x fails for the storm as for paced forks; CPU over 2x fails', () => {
  expect(
    failed(report({ 'storm/1': { cpuPer100kS: 10.5, wallRatio: 1.4, p50: 1.31, p99: 2 } })),
  ).toEqual([
    "CPU per 100k process forks (storm) <= 2x the C relay's",
    "CPU per 100k process forks (storm) below forkstat's",
    "latency p50 (storm) <= 1.3x the C relay's",
  ]);
});

test('RSS after the storm is judged in MiB, as VmRSS measures it: 70 passes, a KiB more fails', () => {
  const withRss = (afterStormMiB: number): BenchReport => ({
    ...report({}),
    daemonNode: 'v24.0.0',
    rss: { idleMiB: afterStormMiB, afterStormMiB },
  });
  expect(failed(withRss(70))).toEqual([]);
  expect(failed(withRss(70 + 1 / 1024))).toEqual(['RSS after the storm <= 70 MiB (Node v24.0.0)']);
});
