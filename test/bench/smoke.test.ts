/**
 * The benchmark in smoke mode (a few hundred events, one round, no goals), so that `npm run
 * bench` cannot rot: every relay delivers exactly one signal per fork to every registrant, and
 * the JSON, Markdown and SVG reports are written.
 */
import fs from 'node:fs';
import { runBench } from '../../bench/relayBench';
import { requireRootAndBuild } from '../daemon/harness';
import { TempDir, cleanupAll } from '../support';

requireRootAndBuild();

let outDir: string;

beforeAll(() => {
  outDir = new TempDir('relayfork-bench-smoke-').path;
});

afterAll(cleanupAll);

test('smoke: exact delivery under every load, and the three reports', async () => {
  const lines: string[] = [];
  const { report, files } = await runBench({
    smoke: true,
    outDir,
    progress: (line) => lines.push(line),
  });
  expect(lines.length).toBeGreaterThan(3);
  const relays = report.summaries.filter((s) => s.condition !== 'none');
  expect(relays.length).toBeGreaterThan(0);
  for (const s of relays) {
    const name = `${s.load} x${s.registrants} ${s.condition}`;
    expect([name, s.receivedMin, s.receivedMax]).toEqual([name, s.events, s.events]);
    expect(s.latencyMs?.p50).toBeGreaterThan(0);
  }
  expect(report.scale?.registrants).toBeGreaterThan(0);
  expect(report.rss.afterStormMiB).toBeGreaterThan(0);
  // make -j2 of a 6-file project: each relay passed its forks to its registrant and took CPU.
  for (const condition of ['c-relay', 'relayfork']) {
    const m = report.make.find((x) => x.condition === condition);
    expect([condition, m?.signals]).toEqual([condition, expect.any(Number)]);
    expect(m?.signals).toBeGreaterThanOrEqual(7); // make's forks of cc (6 objects and the link), at least
    expect(m?.relayCpuShare).toBeGreaterThan(0);
    expect(m?.registrantCpuShare).toBeGreaterThan(0);
    expect(m?.wallRatio).toBeGreaterThan(0);
  }
  expect(files).toHaveLength(3);
  expect(JSON.parse(fs.readFileSync(files[0], 'utf8'))).toMatchObject({ smoke: true });
  expect(fs.readFileSync(files[1], 'utf8')).toContain('| load | registrants |');
  expect(fs.readFileSync(files[2], 'utf8')).toContain('<polyline');
}, 600000);
