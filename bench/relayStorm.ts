/**
 * Benchmark: what relayfork costs a thread storm, and what it delivers.
 *
 * Side by side in one run (this machine is shared and noisy, so only ratios mean much):
 *   A. 100,000 thread creations with no daemon;
 *   B. the same with the daemon subscribed and nobody registered;
 *   C. the same with one registrant receiving every signal.
 * Reports the wall-time ratios B/A and C/A, the signals the registrant received out of the
 * threads made, signals per second, the daemon's CPU seconds, and its RSS (current and peak).
 *
 * Run with: npm run build && npm run bench (as root).
 */
import fs from 'node:fs';
import {
  Child,
  TempDir,
  compileFixture,
  execFileAsync,
  parseSignals,
  spawnChild,
  waitFor,
} from '../test/support';
import { Daemon, consumerArgs } from '../test/daemon/harness';

const THREADS = Number(process.env.THREADS ?? 100000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);

function procStatus(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const [k, v] = line.split(':');
    if (v !== undefined) out[k] = v.trim();
  }
  return out;
}

function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  // utime and stime are fields 14 and 15 of /proc/<pid>/stat (index 11, 12 after the comm).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Runs the thread storm; returns its wall time and its pid (the si_pid of its threads' signals). */
async function timeThreads(bin: string): Promise<{ seconds: number; pid: number }> {
  const t0 = process.hrtime.bigint();
  const { stdout } = await execFileAsync(bin, [String(THREADS), 'quiet']);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { seconds, pid: Number(/^pid (\d+)$/m.exec(stdout)?.[1]) };
}

async function main(): Promise<void> {
  const tmp = new TempDir('relayfork-bench-');
  let daemon: Daemon | undefined;
  let reg: Child | undefined;
  try {
    const threads = await compileFixture('threads', tmp.path);
    const registrantBin = await compileFixture('rt_consumer', tmp.path);
    for (let round = 1; round <= ROUNDS; round++) {
      // A: no daemon at all.
      const { seconds: none } = await timeThreads(threads);
      // B: the daemon subscribed, nobody registered.
      daemon = await Daemon.start(tmp.join('mnt'));
      const { seconds: idle } = await timeThreads(threads);
      // C: one registrant receiving every signal.
      reg = spawnChild(registrantBin, consumerArgs(daemon.file('processes')));
      await reg.waitForLine(/^ready/, 'stdout');
      const registrant = reg;
      const cpu0 = cpuSeconds(daemon.pid);
      const { seconds: relaying, pid: stormPid } = await timeThreads(threads);
      // A new thread's signal names its process as the parent, which tells the storm's signals
      // apart from the rest of the machine's forks.
      const mine = (): number =>
        parseSignals(registrant.stdout).filter((s) => s.pid === stormPid).length;
      await waitFor(
        'signals to settle',
        async () => {
          const n = mine();
          await new Promise((r) => setTimeout(r, 300));
          return mine() === n && n;
        },
        60000,
      );
      const received = mine();
      const cpu = cpuSeconds(daemon.pid) - cpu0;
      const st = procStatus(daemon.pid);
      console.log(
        `round ${round}: ${THREADS} threads: no daemon ${none.toFixed(2)} s, subscribed ${idle.toFixed(2)} s ` +
          `(x${(idle / none).toFixed(2)}), relaying ${relaying.toFixed(2)} s (x${(relaying / none).toFixed(2)}); ` +
          `signals received ${received} of ${THREADS} (${(received / relaying).toFixed(0)}/s); ` +
          `daemon CPU ${cpu.toFixed(2)} s, RSS ${st.VmRSS} (peak ${st.VmHWM})`,
      );
      await reg.stop();
      await daemon.shutdown();
      daemon = undefined;
    }
  } finally {
    await reg?.stop('SIGKILL');
    await daemon?.shutdown();
    await tmp.cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
