/**
 * Benchmark: what relayfork costs a thread storm, and what it delivers.
 *
 * Side by side in one run (this machine is shared and noisy, so only ratios mean much):
 *   A. 100,000 thread creations with no daemon;
 *   B. the same with the daemon running and one registrant receiving every signal.
 * Reports the wall-time ratio B/A, the signals the registrant received (and lost), signals per
 * second, the daemon's CPU seconds, and its RSS (current and peak).
 *
 * Run with: npm run build && npm run bench (as root).
 */
import fs from 'node:fs';
import {
  Daemon,
  RELAY_SIGNAL,
  TempDir,
  compileFixture,
  execFileAsync,
  parseSignals,
  spawnChild,
  waitFor,
} from '../test/daemon/harness';

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
  try {
    const threads = await compileFixture('threads', tmp.path, ['-pthread']);
    const registrantBin = await compileFixture('registrant', tmp.path);
    daemon = await Daemon.start(tmp.join('mnt'));
    const reg = spawnChild(registrantBin, [daemon.file('processes'), String(RELAY_SIGNAL)]);
    await reg.waitForLine(/^ready/, 'stdout');

    const rows: string[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      // A: registrant unregistered (daemon idle but subscribed), B: registered.
      fs.writeFileSync(daemon.file('processes'), `-${reg.pid}`);
      const { seconds: a } = await timeThreads(threads);
      fs.writeFileSync(daemon.file('processes'), `${reg.pid}`);
      const lines0 = reg.stdout.length;
      const cpu0 = cpuSeconds(daemon.pid);
      const { seconds: b, pid: stormPid } = await timeThreads(threads);
      // A new thread's signal names its process as the parent, which tells the storm's signals
      // apart from the rest of the machine's forks.
      const mine = (): number =>
        parseSignals(reg.stdout.slice(lines0)).filter((s) => s.pid === stormPid).length;
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
      rows.push(
        `round ${round}: ${THREADS} threads  idle ${a.toFixed(2)} s  relaying ${b.toFixed(2)} s  ratio ${(b / a).toFixed(2)}  ` +
          `signals received ${received} (${(received / b).toFixed(0)}/s)  daemon CPU ${cpu.toFixed(2)} s`,
      );
      console.log(rows[rows.length - 1]);
    }
    const st = procStatus(daemon.pid);
    console.log(`daemon RSS ${st.VmRSS}, peak ${st.VmHWM}`);
    await reg.stop();
  } finally {
    if (daemon) await daemon.shutdown();
    await tmp.cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
