/**
 * Benchmark: what receiving the proc connector costs during a thread storm, side by side in one
 * run (the machine is shared and noisy: compare the ratios, not the absolute times).
 *
 *   A. THREADS thread creations with no connector of ours;
 *   B. the same with a ProcConnector subscribed to every kind (legacy listen, fork + exit per
 *      thread reach us);
 *   C. the same with a ProcConnector filtered to fork (the kernel drops the exits for us).
 *
 * For B and C: events/s received, loss counters, and this process's CPU seconds (user + system,
 * main thread and receive worker) per 100,000 events.
 *
 * Run (as root): npx tsc -p tsconfig.bench.json && node .bench-build/bench/netlinkStorm.js
 */
import { spawn } from 'node:child_process';
import { ProcConnector, type ProcEventKind } from '../src/netlink';
import { TempDir, compileFixture } from '../test/support';

const THREADS = Number(process.env.THREADS ?? 100_000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);

/** Start the storm; its pid is known at once, `seconds` resolves when it has finished. */
function startStorm(bin: string): { pid: number; seconds: Promise<number> } {
  const t0 = process.hrtime.bigint();
  const child = spawn(bin, [String(THREADS), '4'], { stdio: 'ignore' });
  const seconds = new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve(Number(process.hrtime.bigint() - t0) / 1e9);
      else reject(new Error(`thread_storm exited with ${code}`));
    });
  });
  return { pid: child.pid ?? -1, seconds };
}

interface Received {
  seconds: number;
  events: number;
  cpuSeconds: number;
  overruns: number;
  dropped: number;
  gaps: number;
}

async function withConnector(bin: string, events?: ProcEventKind[]): Promise<Received> {
  const connector = new ProcConnector(events ? { events } : {});
  let stormPid = -1;
  let stormEvents = 0;
  connector.on('events', (batch) => {
    for (const e of batch) {
      const tgid = e.kind === 'fork' ? e.childTgid : e.processTgid;
      if (tgid === stormPid) stormEvents++;
    }
  });
  await connector.open();
  try {
    const expected = events ? THREADS : 2 * THREADS;
    const cpu0 = process.cpuUsage();
    const storm = startStorm(bin);
    stormPid = storm.pid;
    const seconds = await storm.seconds;
    const deadline = Date.now() + 30_000;
    while (stormEvents < expected && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const cpu = process.cpuUsage(cpu0);
    const c = connector.counters;
    return {
      seconds,
      events: stormEvents,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      overruns: c.overruns,
      dropped: c.dropped,
      gaps: c.sequenceGaps,
    };
  } finally {
    await connector.close();
  }
}

function line(name: string, base: number, r: Received): string {
  return (
    `${name}: ${r.seconds.toFixed(2)} s (x${(r.seconds / base).toFixed(2)} of A), ` +
    `${r.events} storm events = ${Math.round(r.events / r.seconds)}/s, ` +
    `CPU ${r.cpuSeconds.toFixed(2)} s = ${((r.cpuSeconds * 1e5) / r.events).toFixed(3)} s per 100k events, ` +
    `overruns ${r.overruns} dropped ${r.dropped} gaps ${r.gaps}`
  );
}

async function main(): Promise<void> {
  const tmp = new TempDir('relayfork-netlink-bench-');
  try {
    const bin = await compileFixture('thread_storm', tmp.path);
    for (let round = 1; round <= ROUNDS; round++) {
      const a = { seconds: await startStorm(bin).seconds };
      const b = await withConnector(bin);
      const c = await withConnector(bin, ['fork']);
      console.log(`round ${round}: ${THREADS} threads`);
      console.log(`  A (no connector): ${a.seconds.toFixed(2)} s`);
      console.log(`  ${line('B (every kind)', a.seconds, b)}`);
      console.log(`  ${line('C (fork only, kernel-filtered)', a.seconds, c)}`);
    }
  } finally {
    await tmp.cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
