/**
 * `npm run bench` (as root): relayfork side by side with a C reference relay (bench/c_relay.c)
 * and forkstat, under the same loads in the same run, so the report shows ratios (issue 7).
 *
 * Conditions, rotated in every round: none (nothing listening: the wall-time reference), the C
 * relay, forkstat (no registrants: it only prints), relayfork (the daemon from dist/). Loads:
 * paced process forks (~500/s), a max-rate process fork storm, a thread storm, each with 1 and
 * with 10 registrants (bench/latency_consumer.c, which timestamps every signal it takes), and
 * `make -j2` of a generated ~300-file C project. Then the scale case: 1,000 registrants that
 * never take their signals during a 10,000-thread storm (relayfork only).
 *
 * Figures: signals received vs forks made (per registrant), events lost, CPU seconds per 100k
 * events (utime + stime of the whole relay process, all threads), latency fork() -> sigwaitinfo
 * p50/p90/p99/max, wall-time ratio vs none, RSS idle and after the thread storm. Output: JSON,
 * Markdown and an SVG of the latency distributions under bench/results/ (and latest.*).
 *
 * BENCH_SMOKE=1 (or runBench({ smoke: true })): a few hundred events, one round, no forkstat,
 * a 6-file make, no goals: run by the test suite (test/bench/smoke.test.ts) so the bench cannot rot.
 * ROUNDS=N sets the rounds (default 5); LOADS=paced,storm,threads (empty: none), MAKE=0 and SCALE=0
 * select parts;
 * WARMUP_S (relayfork's idle seconds after start-up, default 10) and IDLE_S (the idle window
 * measured before each load, default 3). RELAYFORK_NODE=<path of a node binary> runs the daemon
 * under another Node.js (scripts/lib/node-from-npm.sh fetches them) than the bench's own.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_CATCH_UP_NICE } from '../src/netlink/catchUpPriority';
import { NotifyListener } from '../test/deploy/notifyListener';
import {
  CLI,
  Child,
  ROOT,
  TempDir,
  cleanupAll,
  compileFixture,
  detachMountsBelow,
  sleep,
  spawnChild,
} from '../test/support';

const execFileAsync = promisify(execFile);
const SIGNAL = 40;
/** The scale case's registrants get a uid of their own (see test/fixtures/sleepers.c). */
const SLEEPER_UID = 54348;

type Condition = 'none' | 'c-relay' | 'forkstat' | 'relayfork';
type Load = 'paced' | 'storm' | 'threads';

export interface BenchOptions {
  smoke?: boolean;
  rounds?: number;
  outDir?: string;
  progress?: (line: string) => void;
}

interface Sizes {
  paced: number;
  pacedRate: number;
  storm: number;
  threads: number;
  registrants: number[];
  scaleRegistrants: number;
  scaleThreads: number;
  makeFiles: number;
  /** relayfork's idle time before a load, and the idle window measured then (see WARMUP_S). */
  warmupS: number;
  idleS: number;
}

interface RunResult {
  round: number;
  load: Load;
  registrants: number;
  condition: Condition;
  events: number;
  wallS: number;
  cpuS: number;
  /** Per registrant: signals received for this load's children. */
  received: number[];
  latenciesMs: number[];
  lost: number;
  /** The relay's CPU per second over IDLE_S before the load (ms/s). */
  idleCpuMsPerS: number;
}

export interface Summary {
  load: Load;
  registrants: number;
  condition: Condition;
  events: number;
  cpuPer100kS: number;
  idleCpuMsPerS: number;
  wallRatio: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number } | undefined;
  receivedMin: number | undefined;
  receivedMax: number | undefined;
  lost: number;
}

/** `make -j2` under one condition, medians over the rounds. */
export interface MakeSummary {
  condition: Condition;
  /** make's wall time over the same round's with nothing running: noisy on a shared machine. */
  wallRatio: number;
  /**
   * CPU seconds of the relay (every thread) during make, over make's wall time: the most it can
   * add to it (the time make would wait if every cycle it took were taken from make).
   */
  relayCpuShare: number;
  /** The same for its registrant taking the signals: the user's cost, whichever relay sends. */
  registrantCpuShare: number;
  /** Signals the registrant took during make (the forks relayed); 0 for forkstat. */
  signals: number;
}

export interface BenchReport {
  date: string;
  machine: { kernel: string; cpus: string; cores: number; memGiB: number; node: string };
  /** The Node.js running relayfork (RELAYFORK_NODE, default the bench's own). */
  daemonNode: string;
  smoke: boolean;
  rounds: number;
  sizes: Sizes;
  summaries: Summary[];
  make: MakeSummary[];
  rss: { idleMiB: number; afterStormMiB: number };
  scale:
    | {
        registrants: number;
        threads: number;
        backlogS: number;
        worstReadS: number;
        longestWatchdogGapS: number;
        sigtermS: number;
      }
    | undefined;
  goals: { goal: string; pass: boolean; detail: string }[];
  runs: RunResult[];
}

/**
 * How long relayfork runs idle before a load is measured. Its start-up leaves garbage that V8's
 * memory reducer collects some seconds later (a full mark-compact of the main isolate, 0.1-0.3 s
 * of CPU on this VM, seen with --trace-gc), which would land in the load's window: start-up cost,
 * not per-fork cost. The C relay and forkstat have nothing of the kind.
 */
const WARMUP_S = Number(process.env.WARMUP_S ?? 10);
/** The idle window measured before each load (no forks of ours: the machine's own still come). */
const IDLE_S = Number(process.env.IDLE_S ?? 3);
/** The node that runs relayfork's daemon. */
const DAEMON_NODE = process.env.RELAYFORK_NODE ?? process.execPath;

function sizesFor(smoke: boolean): Sizes {
  return smoke
    ? {
        paced: 100,
        pacedRate: 500,
        storm: 200,
        threads: 300,
        registrants: [1, 2],
        scaleRegistrants: 20,
        scaleThreads: 300,
        makeFiles: 6,
        warmupS: 0,
        idleS: 0,
      }
    : {
        paced: 3000,
        pacedRate: 500,
        storm: 10000,
        threads: 100000,
        registrants: [1, 10],
        scaleRegistrants: 1000,
        scaleThreads: 10000,
        makeFiles: 300,
        warmupS: WARMUP_S,
        idleS: IDLE_S,
      };
}

// ---------------------------------------------------------------------------------------------
// Processes

/**
 * CPU seconds of every thread of `pid` (utime + stime): the sum of each thread's
 * /proc/<pid>/task/<tid>/schedstat run time, in nanoseconds, because /proc/<pid>/stat counts in
 * ticks of 10 ms, a few per cent of a paced run's whole cost. The relays' threads live as long as
 * the process, so no exited thread's time is missing from the sum.
 */
function cpuSeconds(pid: number): number {
  let ns = 0;
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return ns / 1e9;
}

function rssMiB(pid: number): number {
  const line = fs
    .readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1] ?? 0) / 1024;
}

/** Waits until `pid`'s CPU time stops growing (the relay has worked through its backlog). */
async function settle(pid: number, maxS = 120): Promise<number> {
  const t0 = Date.now();
  let last = cpuSeconds(pid);
  let stableSince = Date.now();
  while (Date.now() - t0 < maxS * 1000) {
    await sleep(100);
    const now = cpuSeconds(pid);
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    } else if (Date.now() - stableSince >= 400) break;
  }
  return (stableSince - t0) / 1000;
}

function startChild(file: string, args: string[], env?: NodeJS.ProcessEnv): Child {
  return spawnChild(file, args, { stdin: 'pipe', env });
}

async function compile(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const sources: [string, string][] = [
    ['c_relay', path.join(ROOT, 'bench', 'c_relay.c')],
    ['latency_consumer', path.join(ROOT, 'bench', 'latency_consumer.c')],
    ['loadgen', path.join(ROOT, 'bench', 'loadgen.c')],
    ['sleepers', path.join(ROOT, 'test', 'fixtures', 'sleepers.c')],
  ];
  await Promise.all(
    sources.map(async ([name, src]) => {
      out[name] = await compileFixture(src, dir);
    }),
  );
  return out;
}

async function ensureForkstat(): Promise<string> {
  try {
    const { stdout } = await execFileAsync('sh', ['-c', 'command -v forkstat']);
    return stdout.trim();
  } catch {
    await execFileAsync('apt-get', ['install', '-y', 'forkstat'], { timeout: 300000 });
    return '/usr/bin/forkstat';
  }
}

// ---------------------------------------------------------------------------------------------
// One run

interface Relay {
  pid: number | undefined;
  /** Registers a consumer (relayfork: the consumer registers itself through this path). */
  processesPath: string | undefined;
  stop(): Promise<number>; // events lost
}

async function startRelayfork(
  dir: string,
  env?: NodeJS.ProcessEnv,
): Promise<Relay & { child: Child }> {
  const mountpoint = path.join(dir, `mnt-${Date.now()}`);
  const child = startChild(
    DAEMON_NODE,
    [CLI, '--mountpoint', mountpoint, '--signal', String(SIGNAL)],
    env,
  );
  await child.waitForLine(/ready/, 'stderr', 30000);
  return {
    child,
    pid: child.pid,
    processesPath: path.join(mountpoint, 'processes'),
    async stop() {
      await child.stop('SIGTERM', 30000);
      await detachMountsBelow(mountpoint);
      fs.rmSync(mountpoint, { recursive: true, force: true });
      const lost = child.stderr
        .map((l) => /overflowed: (\d+) events lost/.exec(l)?.[1])
        .filter((v): v is string => v !== undefined)
        .map(Number);
      return lost.length ? Math.max(...lost) : 0;
    },
  };
}

interface Registrant {
  child: Child;
  /** Where it writes its "child si_pid t_ns" lines when stopped with SIGTERM. */
  out: string;
}

/**
 * Starts `condition`: relayfork (its registrants register themselves) or the C relay (given
 * its registrants' pids), each with `registrants` latency_consumers writing to
 * `<outPrefix>-<i>.txt`; forkstat (no registrants: it only prints); or nothing ('none'). What was
 * started before a failure is stopped.
 */
async function startCondition(
  bins: Record<string, string>,
  forkstat: string | undefined,
  condition: Condition,
  registrants: number,
  dir: string,
  outPrefix: string,
): Promise<{ relay: Relay | undefined; consumers: Registrant[] }> {
  const consumers: Registrant[] = [];
  let relay: Relay | undefined;
  const startConsumers = async (processes: string | undefined): Promise<void> => {
    for (let i = 0; i < registrants; i++) {
      const out = `${outPrefix}-${i}.txt`;
      const c = startChild(bins.latency_consumer, [
        String(SIGNAL),
        out,
        ...(processes ? [processes] : []),
      ]);
      consumers.push({ child: c, out });
      await c.waitForLine(/^ready$/, 'stdout');
    }
  };
  try {
    if (condition === 'relayfork') {
      relay = await startRelayfork(dir);
      await startConsumers(relay.processesPath);
    } else if (condition === 'c-relay') {
      await startConsumers(undefined);
      // relayfork's catch-up priority, the same policy at the same nice value: like with like.
      const c = startChild(
        bins.c_relay,
        [String(SIGNAL), ...consumers.map((x) => String(x.child.pid))],
        { ...process.env, CATCH_UP_NICE: String(DEFAULT_CATCH_UP_NICE) },
      );
      relay = {
        pid: c.pid,
        processesPath: undefined,
        async stop() {
          await c.stop('SIGTERM');
          return Number(/overruns (\d+)/.exec(c.stdout.join('\n'))?.[1] ?? 0);
        },
      };
      await c.waitForLine(/^ready$/, 'stdout');
    } else if (condition === 'forkstat' && forkstat !== undefined) {
      const c = startChild(forkstat, ['-e', 'fork', '-q']);
      relay = {
        pid: c.pid,
        processesPath: undefined,
        async stop() {
          await c.stop('SIGINT');
          return 0;
        },
      };
      await sleep(500); // it prints nothing until it ends: give it time to subscribe
    }
    return { relay, consumers };
  } catch (err) {
    for (const c of consumers) await c.child.stop('SIGKILL');
    await relay?.stop();
    throw err;
  }
}

async function runOnce(
  bins: Record<string, string>,
  forkstat: string | undefined,
  dir: string,
  round: number,
  load: Load,
  registrants: number,
  condition: Condition,
  sizes: Sizes,
  rss: { idleMiB: number; afterStormMiB: number },
): Promise<RunResult> {
  const started = await startCondition(
    bins,
    forkstat,
    condition,
    registrants,
    dir,
    path.join(dir, `recv-${condition}`),
  );
  const { consumers } = started;
  let relay = started.relay;
  if (condition === 'relayfork' && relay?.pid !== undefined) {
    rss.idleMiB = Math.max(rss.idleMiB, rssMiB(relay.pid));
  }
  try {
    const n = load === 'paced' ? sizes.paced : load === 'storm' ? sizes.storm : sizes.threads;
    const forksFile = path.join(dir, `forks-${condition}.txt`);
    const args =
      load === 'paced'
        ? ['paced', String(n), String(sizes.pacedRate), forksFile]
        : [load === 'storm' ? 'storm' : 'threads', String(n), forksFile];
    let idleCpuMsPerS = 0;
    if (relay?.pid !== undefined && sizes.idleS > 0) {
      if (condition === 'relayfork') await sleep(sizes.warmupS * 1000);
      // Idle cost: timers, heartbeats and the machine's own forks, per second. At 500 forks/s
      // every ms/s here is 2 us per fork in the paced figure.
      const i0 = cpuSeconds(relay.pid);
      const at = process.hrtime.bigint();
      await sleep(sizes.idleS * 1000);
      idleCpuMsPerS =
        ((cpuSeconds(relay.pid) - i0) * 1e3) / (Number(process.hrtime.bigint() - at) / 1e9);
    }
    // The window is the load and the relay's backlog after it (settle), nothing before.
    const cpu0 = relay?.pid !== undefined ? cpuSeconds(relay.pid) : 0;
    const t0 = process.hrtime.bigint();
    const { stdout } = await execFileAsync(bins.loadgen, args, { maxBuffer: 1 << 20 });
    const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
    // Every signal of this load carries the load generator's pid as si_pid (the parent of its
    // processes, the process of its threads): matching on it as well as on the child id keeps
    // other processes' forks out when ids are reused during a 100,000-thread storm.
    const loadPid = Number(/^pid (\d+)$/m.exec(stdout)?.[1]);
    if (relay?.pid !== undefined) await settle(relay.pid);
    const cpuS = relay?.pid !== undefined ? cpuSeconds(relay.pid) - cpu0 : 0;
    if (condition === 'relayfork' && load === 'threads' && relay?.pid !== undefined) {
      rss.afterStormMiB = Math.max(rss.afterStormMiB, rssMiB(relay.pid));
    }
    // Ids wrap within a run (pid_max is 32768 on a 2-core machine, and a storm makes 100,000
    // threads): each id maps to its forks in order, and a registrant's signals, queued in order
    // (RT signals of one number are FIFO, kernel/signal.c), take them one by one.
    const forksOf = new Map<number, number[]>();
    for (const line of fs.readFileSync(forksFile, 'utf8').split('\n')) {
      const [c, t] = line.split(' ');
      if (t === undefined) continue;
      const list = forksOf.get(Number(c));
      if (list) list.push(Number(t));
      else forksOf.set(Number(c), [Number(t)]);
    }
    const received: number[] = [];
    const latenciesMs: number[] = [];
    for (const consumer of consumers) {
      await consumer.child.stop('SIGTERM');
      const taken = new Map<number, number>();
      let count = 0;
      for (const line of fs.readFileSync(consumer.out, 'utf8').split('\n')) {
        const [c, p, t] = line.split(' ');
        const child = Number(c);
        const list = forksOf.get(child);
        if (t === undefined || list === undefined || Number(p) !== loadPid) continue;
        const next = taken.get(child) ?? 0;
        if (next >= list.length) continue; // a stranger's fork with a reused id, after ours
        taken.set(child, next + 1);
        count++;
        latenciesMs.push((Number(t) - list[next]) / 1e6);
      }
      received.push(count);
    }
    const lost = relay ? await relay.stop() : 0;
    relay = undefined;
    return {
      round,
      load,
      registrants,
      condition,
      events: n,
      wallS,
      cpuS,
      received,
      latenciesMs,
      lost,
      idleCpuMsPerS,
    };
  } finally {
    for (const c of consumers) await c.child.stop('SIGKILL');
    await relay?.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// make -j2

function generateProject(dir: string, files: number): void {
  fs.mkdirSync(dir, { recursive: true });
  const objs: string[] = [];
  for (let i = 0; i < files; i++) {
    fs.writeFileSync(
      path.join(dir, `f${i}.c`),
      `int f${i}(int x) { int s = 0; for (int i = 0; i < x; i++) s += i * ${i}; return s; }\n`,
    );
    objs.push(`f${i}.o`);
  }
  fs.writeFileSync(path.join(dir, 'main.c'), 'int main(void) { return 0; }\n');
  fs.writeFileSync(
    path.join(dir, 'Makefile'),
    `OBJS = main.o ${objs.join(' ')}\nprog: $(OBJS)\n\tcc -o $@ $(OBJS)\n%.o: %.c\n\tcc -O1 -c $< -o $@\nclean:\n\trm -f prog *.o\n`,
  );
}

interface MakeRun {
  wallS: number;
  /** CPU seconds of the relay during make (and of its backlog after), and of its registrant. */
  relayCpuS: number;
  registrantCpuS: number;
  signals: number;
}

/**
 * One `make -j2` from clean under `condition`: relayfork and the C relay with one registrant (a
 * latency_consumer, as in the loads), forkstat printing to nowhere, or nothing. WARMUP_MAKES
 * makes, not measured, run first under the same condition: a daemon that has been up a while has
 * relayed thousands of forks before any make, and V8 has compiled its relay loop by then. Measured
 * with one daemon and makes in a row (~920 forks each): after one make the next cost the relay
 * 112-120 ms of CPU, after two 82-94 ms, after more 81-92 ms. Every condition gets them, so that
 * make's files are as warm in each.
 */
/** Unmeasured makes before the measured one (see runMake). */
const WARMUP_MAKES = 2;

async function runMake(
  bins: Record<string, string>,
  forkstat: string | undefined,
  dir: string,
  project: string,
  condition: Condition,
  sizes: Sizes,
): Promise<MakeRun> {
  const { relay, consumers } = await startCondition(
    bins,
    forkstat,
    condition,
    condition === 'none' ? 0 : 1,
    dir,
    path.join(dir, `make-recv-${condition}`),
  );
  const relayPid = relay?.pid;
  const registrant = consumers.at(0);
  const registrantPid = registrant?.child.pid;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    for (const c of consumers) await c.child.stop('SIGTERM');
    await relay?.stop();
  };
  try {
    // Past its start-up GC (see WARMUP_S): make measures the daemon's everyday cost.
    if (condition === 'relayfork') await sleep(sizes.warmupS * 1000);
    /** One make from clean; its start and end on CLOCK_MONOTONIC (the registrant's clock). */
    const make = async (): Promise<{ t0: bigint; t1: bigint }> => {
      await execFileAsync('make', ['-s', '-C', project, 'clean']);
      const t0 = process.hrtime.bigint();
      await execFileAsync('make', ['-s', '-j2', '-C', project], { maxBuffer: 1 << 24 });
      return { t0, t1: process.hrtime.bigint() };
    };
    const cpu = (pid: number | undefined): number => (pid === undefined ? 0 : cpuSeconds(pid));
    for (let i = 0; i < WARMUP_MAKES; i++) await make();
    if (relayPid !== undefined) await settle(relayPid);
    const relay0 = cpu(relayPid);
    const registrant0 = cpu(registrantPid);
    const { t0, t1 } = await make();
    const wallS = Number(t1 - t0) / 1e9;
    if (relayPid !== undefined) await settle(relayPid);
    const settled = process.hrtime.bigint();
    const relayCpuS = cpu(relayPid) - relay0;
    const registrantCpuS = cpu(registrantPid) - registrant0;
    await stop();
    // The signals taken from the measured make's start until the relay had settled.
    const signals = registrant
      ? fs
          .readFileSync(registrant.out, 'utf8')
          .split('\n')
          .map((line) => BigInt(line.split(' ')[2] ?? -1))
          .filter((t) => t >= t0 && t <= settled).length
      : 0;
    return { wallS, relayCpuS, registrantCpuS, signals };
  } finally {
    await stop();
    if (registrant) fs.rmSync(registrant.out, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Scale

async function runScale(
  bins: Record<string, string>,
  dir: string,
  sizes: Sizes,
): Promise<NonNullable<BenchReport['scale']>> {
  const sock = path.join(dir, 'notify.sock');
  const listener = new NotifyListener(sock);
  const relay = await startRelayfork(dir, {
    ...process.env,
    NOTIFY_SOCKET: sock,
    WATCHDOG_USEC: '2000000',
  });
  const sleepers = startChild(bins.sleepers, [
    relay.processesPath ?? '',
    String(sizes.scaleRegistrants),
    String(SLEEPER_UID),
    String(SIGNAL),
  ]);
  try {
    await sleepers.waitForLine(/^ready \d+$/, 'stdout', 300000);
    const pid = relay.pid ?? -1;
    const stormStart = Date.now();
    const storm = execFileAsync(bins.loadgen, [
      'threads',
      String(sizes.scaleThreads),
      path.join(dir, 'scale-forks.txt'),
    ]);
    let stormDone = false;
    void storm.then(() => (stormDone = true));
    let worstReadS = 0;
    let stormEnd = 0;
    let backlogS = 0;
    // Read `processes` (another process, as cat) through the storm and the relay's backlog. The
    // backlog is over when the daemon's CPU falls below half a core over a 500 ms window (each
    // fork still costs it 1,000 EAGAIN sends, so "no CPU at all" never comes: cat forks too).
    let lastCpu = cpuSeconds(pid);
    let lastAt = Date.now();
    for (;;) {
      const t0 = process.hrtime.bigint();
      await execFileAsync('cat', [relay.processesPath ?? '']);
      worstReadS = Math.max(worstReadS, Number(process.hrtime.bigint() - t0) / 1e9);
      await sleep(100);
      if (stormDone && stormEnd === 0) stormEnd = Date.now();
      if (Date.now() - lastAt >= 500) {
        const cpu = cpuSeconds(pid);
        const busy = (cpu - lastCpu) / ((Date.now() - lastAt) / 1000);
        lastCpu = cpu;
        lastAt = Date.now();
        if (stormDone && busy < 0.5) {
          backlogS = Math.max(0, (Date.now() - stormEnd) / 1000);
          break;
        }
      }
      if (Date.now() - stormStart > 600000) throw new Error('scale: the relay never went idle');
    }
    const pings = listener
      .with('WATCHDOG')
      .map((m) => m.at)
      .filter((at) => at >= stormStart - 2000);
    let gap = 0;
    for (let i = 1; i < pings.length; i++) gap = Math.max(gap, pings[i] - pings[i - 1]);
    const t0 = Date.now();
    await relay.stop();
    const sigtermS = (Date.now() - t0) / 1000;
    return {
      registrants: sizes.scaleRegistrants,
      threads: sizes.scaleThreads,
      backlogS,
      worstReadS,
      longestWatchdogGapS: gap / 1000,
      sigtermS,
    };
  } finally {
    sleepers.proc.stdin?.end();
    await sleepers.stop('SIGTERM', 30000);
    await relay.stop();
    listener.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics and report

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
}

function summarize(runs: RunResult[]): Summary[] {
  const out: Summary[] = [];
  const keys = new Set(runs.map((r) => `${r.load}|${r.registrants}|${r.condition}`));
  for (const key of keys) {
    const [load, registrants, condition] = key.split('|') as [Load, string, Condition];
    const mine = runs.filter(
      (r) => r.load === load && r.registrants === Number(registrants) && r.condition === condition,
    );
    const ratios = mine.map((r) => {
      const none = runs.find(
        (x) =>
          x.round === r.round &&
          x.load === r.load &&
          x.registrants === r.registrants &&
          x.condition === 'none',
      );
      return none ? r.wallS / none.wallS : NaN;
    });
    const lat = mine.flatMap((r) => r.latenciesMs).sort((a, b) => a - b);
    const recv = mine.flatMap((r) => r.received);
    out.push({
      load,
      registrants: Number(registrants),
      condition,
      events: mine[0].events,
      cpuPer100kS: median(mine.map((r) => (r.cpuS / r.events) * 100000)),
      idleCpuMsPerS: median(mine.map((r) => r.idleCpuMsPerS)),
      wallRatio: median(ratios),
      latencyMs: lat.length
        ? {
            p50: median(
              mine.map((r) =>
                quantile(
                  [...r.latenciesMs].sort((a, b) => a - b),
                  0.5,
                ),
              ),
            ),
            p90: median(
              mine.map((r) =>
                quantile(
                  [...r.latenciesMs].sort((a, b) => a - b),
                  0.9,
                ),
              ),
            ),
            p99: median(
              mine.map((r) =>
                quantile(
                  [...r.latenciesMs].sort((a, b) => a - b),
                  0.99,
                ),
              ),
            ),
            max: lat[lat.length - 1],
          }
        : undefined,
      receivedMin: recv.length ? Math.min(...recv) : undefined,
      receivedMax: recv.length ? Math.max(...recv) : undefined,
      lost: Math.max(0, ...mine.map((r) => r.lost)),
    });
  }
  return out;
}

export function evaluateGoals(report: BenchReport): BenchReport['goals'] {
  const goals: BenchReport['goals'] = [];
  const get = (load: Load, k: number, c: Condition): Summary | undefined =>
    report.summaries.find((s) => s.load === load && s.registrants === k && s.condition === c);
  const add = (goal: string, pass: boolean, detail: string): void => {
    goals.push({ goal, pass, detail });
  };
  const fmt = (n: number | undefined, digits = 2): string =>
    n === undefined ? 'n/a' : n.toFixed(digits);
  // Every load is judged with each registrant count it ran with (issue 7: "each with 1 and with
  // 10 registrants"), except the comparisons with forkstat, which signals no one: with 10
  // registrants a relay makes ten sends per fork that forkstat does not (the C relay's CPU was
  // above forkstat's there too), so "below forkstat's" and the storm's wall time against
  // forkstat's are judged with 1.
  const per = (k: number): string => (k === 1 ? '' : `, ${k} registrants`);
  for (const k of report.sizes.registrants) {
    for (const load of ['paced', 'storm'] as const) {
      const rf = get(load, k, 'relayfork');
      const c = get(load, k, 'c-relay');
      const fs_ = k === 1 ? get(load, k, 'forkstat') : undefined;
      if (rf && c) {
        add(
          `CPU per 100k process forks (${load}${per(k)}) <= 2x the C relay's`,
          rf.cpuPer100kS <= 2 * c.cpuPer100kS,
          `${fmt(rf.cpuPer100kS)} s vs C ${fmt(c.cpuPer100kS)} s`,
        );
      }
      if (rf && fs_) {
        add(
          `CPU per 100k process forks (${load}) below forkstat's`,
          rf.cpuPer100kS < fs_.cpuPer100kS,
          `${fmt(rf.cpuPer100kS)} s vs forkstat ${fmt(fs_.cpuPer100kS)} s`,
        );
      }
    }
    const rt = get('threads', k, 'relayfork');
    const ct = get('threads', k, 'c-relay');
    if (rt && ct) {
      add(
        `CPU per 100k thread events${per(k)} <= the C relay's x1.2`,
        rt.cpuPer100kS <= 1.2 * ct.cpuPer100kS,
        `${fmt(rt.cpuPer100kS)} s vs C ${fmt(ct.cpuPer100kS)} s`,
      );
    }
    // p50: 1.3x for process forks (paced and storm), 2x for the thread storm; p99: 2x for all.
    for (const [load, bound] of [
      ['paced', 1.3],
      ['storm', 1.3],
      ['threads', 2],
    ] as const) {
      const r = get(load, k, 'relayfork')?.latencyMs;
      const c = get(load, k, 'c-relay')?.latencyMs;
      if (r && c) {
        add(
          `latency p50 (${load}${per(k)}) <= ${bound}x the C relay's`,
          r.p50 <= bound * c.p50,
          `${fmt(r.p50)} ms vs C ${fmt(c.p50)} ms`,
        );
        add(
          `latency p99 (${load}${per(k)}) <= 2x the C relay's`,
          r.p99 <= 2 * c.p99,
          `${fmt(r.p99)} ms vs C ${fmt(c.p99)} ms`,
        );
      }
    }
    const r = get('threads', k, 'relayfork');
    if (r) {
      add(
        `0 signals missed in the thread storm with ${k} registrant(s)`,
        r.receivedMin === r.events,
        `received ${r.receivedMin}..${r.receivedMax} of ${r.events} per registrant`,
      );
    }
  }
  const sst = get('storm', 1, 'relayfork');
  const sf = get('storm', 1, 'forkstat');
  if (sst && sf) {
    add(
      "storm wall-time ratio no worse than forkstat's",
      sst.wallRatio <= sf.wallRatio,
      `x${fmt(sst.wallRatio)} vs forkstat x${fmt(sf.wallRatio)}`,
    );
  }
  // The wall-time ratio of one make against another moves by several per cent on this shared
  // machine whatever runs (forkstat measured x0.79 and the C relay x0.95 on 11-29): too coarse
  // for 1%. The CPU the relay takes during make bounds what it can add. Its registrant's CPU is
  // reported beside it, not counted: taking the signals is the user's cost with any relay (the
  // C relay's registrant alone took 0.5% on 12-03).
  const mk = report.make.find((m) => m.condition === 'relayfork');
  if (mk) {
    add(
      "make -j2 within 1%: relayfork's CPU during make <= 1% of make's wall time",
      mk.relayCpuShare <= 0.01,
      `${fmt(mk.relayCpuShare * 100, 3)}% for ${fmt(mk.signals, 0)} forks relayed (C relay ${fmt(
        (report.make.find((m) => m.condition === 'c-relay')?.relayCpuShare ?? NaN) * 100,
        3,
      )}%); wall time x${fmt(mk.wallRatio, 3)}`,
    );
  }
  // Only when the thread storm ran (LOADS may leave it out).
  if (report.rss.afterStormMiB > 0) {
    add(
      // The issue's "70 MB", read as MiB (the kernel's VmRSS is in KiB): 70 MB of 10^6 bytes
      // would be 66.8 MiB.
      `RSS after the storm <= 70 MiB (Node ${report.daemonNode})`,
      report.rss.afterStormMiB <= 70,
      `${fmt(report.rss.afterStormMiB)} MiB`,
    );
  }
  return goals;
}

function markdown(report: BenchReport): string {
  const f = (n: number | undefined, d = 2): string =>
    n === undefined || Number.isNaN(n) ? '-' : n.toFixed(d);
  const lines: string[] = [];
  lines.push(`# relayfork benchmark (${report.smoke ? 'smoke' : 'full'}), ${report.date}`);
  lines.push('');
  const m = report.machine;
  lines.push(
    `Machine: ${m.cpus} (${m.cores} cores), ${m.memGiB.toFixed(1)} GiB, Linux ${m.kernel}, Node ${m.node} (relayfork's daemon: ${report.daemonNode}); ${report.rounds} round(s), conditions rotated; medians.`,
  );
  lines.push('');
  lines.push(
    '| load | registrants | condition | events | CPU s / 100k | idle CPU ms/s | wall x none | p50 ms | p90 ms | p99 ms | max ms | received / registrant | lost |',
  );
  lines.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const s of report.summaries) {
    const l = s.latencyMs;
    lines.push(
      `| ${s.load} | ${s.registrants} | ${s.condition} | ${s.events} | ${f(s.cpuPer100kS)} | ${f(s.idleCpuMsPerS)} | ${f(s.wallRatio, 3)} | ${f(l?.p50, 3)} | ${f(l?.p90, 3)} | ${f(l?.p99, 3)} | ${f(l?.max, 1)} | ${s.receivedMin === undefined ? '-' : `${s.receivedMin}..${s.receivedMax}`} | ${s.lost} |`,
    );
  }
  lines.push('');
  if (report.make.length) {
    lines.push(
      '| `make -j2` | wall x none | relay CPU / make wall | registrant CPU / make wall | signals taken |',
      '| --- | --- | --- | --- | --- |',
    );
    for (const x of report.make) {
      lines.push(
        `| ${x.condition} | ${f(x.wallRatio, 3)} | ${f(x.relayCpuShare * 100, 3)}% | ${f(x.registrantCpuShare * 100, 3)}% | ${f(x.signals, 0)} |`,
      );
    }
    lines.push('');
  }
  if (report.rss.idleMiB > 0) {
    lines.push(
      `RSS of relayfork: idle ${f(report.rss.idleMiB, 1)} MiB, after the thread storm ${f(report.rss.afterStormMiB, 1)} MiB.`,
    );
    lines.push('');
  }
  if (report.scale) {
    const s = report.scale;
    lines.push(
      `Scale: ${s.registrants} registrants with full queues, ${s.threads}-thread storm: relay backlog ${f(s.backlogS, 1)} s after the storm, worst read of processes ${f(s.worstReadS, 3)} s, longest watchdog gap ${f(s.longestWatchdogGapS, 2)} s (interval 1 s), SIGTERM to exit ${f(s.sigtermS, 2)} s.`,
    );
    lines.push('');
  }
  if (report.goals.length) {
    lines.push('## Goals');
    lines.push('');
    for (const g of report.goals)
      lines.push(`- ${g.pass ? 'PASS' : 'FAIL'}: ${g.goal} (${g.detail})`);
    lines.push('');
  }
  lines.push('Latency distributions: see the SVG beside this file.');
  return lines.join('\n') + '\n';
}

/** Cumulative distributions of latency (log x), relayfork vs the C relay, per load. */
function svg(report: BenchReport): string {
  const W = 900;
  const H = 320;
  const panels = (['paced', 'threads'] as const).filter((l) =>
    report.runs.some((r) => r.load === l && r.latenciesMs.length > 0),
  );
  const pw = W / Math.max(1, panels.length);
  const colors: Record<string, string> = { relayfork: '#d6336c', 'c-relay': '#1c7ed6' };
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
  ];
  const xmin = Math.log10(0.01);
  const xmax = Math.log10(100);
  panels.forEach((load, i) => {
    const x0 = i * pw + 50;
    const w = pw - 70;
    const y0 = 30;
    const h = H - 70;
    parts.push(
      `<text x="${x0}" y="18" font-size="13">${load === 'paced' ? 'process forks, paced' : 'thread storm'} (1 registrant): CDF of fork() to sigwaitinfo</text>`,
      `<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="none" stroke="#888"/>`,
    );
    for (let e = -2; e <= 2; e++) {
      const x = x0 + ((e - xmin) / (xmax - xmin)) * w;
      parts.push(
        `<line x1="${x}" y1="${y0}" x2="${x}" y2="${y0 + h}" stroke="#eee"/>`,
        `<text x="${x - 10}" y="${y0 + h + 14}">${10 ** e} ms</text>`,
      );
    }
    for (const q of [0.5, 0.9, 0.99]) {
      const y = y0 + h - q * h;
      parts.push(
        `<line x1="${x0}" y1="${y}" x2="${x0 + w}" y2="${y}" stroke="#eee"/>`,
        `<text x="${x0 - 32}" y="${y + 4}">p${q * 100}</text>`,
      );
    }
    (['c-relay', 'relayfork'] as const).forEach((cond, ci) => {
      const lat = report.runs
        .filter((r) => r.load === load && r.registrants === 1 && r.condition === cond)
        .flatMap((r) => r.latenciesMs)
        .sort((a, b) => a - b);
      if (lat.length === 0) return;
      const pts: string[] = [];
      const step = Math.max(1, Math.floor(lat.length / 400));
      for (let k = 0; k < lat.length; k += step) {
        const lx = Math.min(xmax, Math.max(xmin, Math.log10(Math.max(lat[k], 1e-3))));
        pts.push(
          `${(x0 + ((lx - xmin) / (xmax - xmin)) * w).toFixed(1)},${(y0 + h - (k / lat.length) * h).toFixed(1)}`,
        );
      }
      parts.push(
        `<polyline fill="none" stroke="${colors[cond]}" stroke-width="2" points="${pts.join(' ')}"/>`,
        `<text x="${x0 + 10}" y="${y0 + 16 + ci * 14}" fill="${colors[cond]}">${cond} (n=${lat.length})</text>`,
      );
    });
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------

export async function runBench(
  options: BenchOptions = {},
): Promise<{ report: BenchReport; files: string[] }> {
  if (process.geteuid?.() !== 0) throw new Error('the benchmark needs root');
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const smoke = options.smoke ?? false;
  const rounds = smoke ? 1 : (options.rounds ?? 5);
  const sizes = sizesFor(smoke);
  const progress = options.progress ?? ((line: string) => process.stderr.write(`\r${line}\x1b[K`));
  const tmp = new TempDir('relayfork-bench-');
  const dir = tmp.path;
  try {
    const bins = await compile(dir);
    const forkstat = smoke ? undefined : await ensureForkstat();
    const conditions: Condition[] = smoke
      ? ['none', 'c-relay', 'relayfork']
      : ['none', 'c-relay', 'forkstat', 'relayfork'];
    const runs: RunResult[] = [];
    const rss = { idleMiB: 0, afterStormMiB: 0 };
    // LOADS= (empty) runs none of them: make and scale alone.
    const loads = (process.env.LOADS?.split(',').filter(Boolean) ?? [
      'paced',
      'storm',
      'threads',
    ]) as Load[];
    if (process.env.MAKE === '0') sizes.makeFiles = 0;
    const total = rounds * loads.length * sizes.registrants.length * conditions.length;
    let done = 0;
    const make = new Map<Condition, MakeRun[]>(conditions.map((c) => [c, []]));
    const project = path.join(dir, 'project');
    if (sizes.makeFiles > 0) generateProject(project, sizes.makeFiles);
    for (let round = 0; round < rounds; round++) {
      // Rotate the order of the conditions every round (A B C, B C A, ...).
      const order = conditions.map((_, i) => conditions[(i + round) % conditions.length]);
      for (const load of loads) {
        for (const k of sizes.registrants) {
          for (const condition of order) {
            progress(`[${++done}/${total}] round ${round + 1} ${load} x${k} ${condition}`);
            runs.push(await runOnce(bins, forkstat, dir, round, load, k, condition, sizes, rss));
          }
        }
      }
      if (sizes.makeFiles > 0) {
        for (const condition of order) {
          progress(`round ${round + 1} make -j2 ${condition}`);
          make.get(condition)?.push(await runMake(bins, forkstat, dir, project, condition, sizes));
        }
      }
    }
    progress('scale: 1,000 registrants with full queues during a thread storm');
    const scale = process.env.SCALE === '0' ? undefined : await runScale(bins, dir, sizes);
    const none = make.get('none') ?? [];
    const report: BenchReport = {
      date: new Date().toISOString(),
      machine: {
        kernel: os.release(),
        cpus: os.cpus()[0]?.model ?? 'unknown',
        cores: os.cpus().length,
        memGiB: os.totalmem() / 2 ** 30,
        node: process.version,
      },
      daemonNode: (await execFileAsync(DAEMON_NODE, ['--version'])).stdout.trim(),
      smoke,
      rounds,
      sizes,
      summaries: summarize(runs),
      make:
        none.length > 0
          ? [...make]
              .filter(([condition]) => condition !== 'none')
              .map(([condition, runs]) => ({
                condition,
                wallRatio: median(runs.map((r, i) => r.wallS / none[i].wallS)),
                relayCpuShare: median(runs.map((r) => r.relayCpuS / r.wallS)),
                registrantCpuShare: median(runs.map((r) => r.registrantCpuS / r.wallS)),
                signals: median(runs.map((r) => r.signals)),
              }))
          : [],
      rss,
      scale,
      goals: [],
      runs,
    };
    if (!smoke) report.goals = evaluateGoals(report);
    progress('');
    const outDir = options.outDir ?? path.join(ROOT, 'bench', 'results');
    fs.mkdirSync(outDir, { recursive: true });
    const stamp = report.date.replace(/[:.]/g, '-');
    const base = path.join(outDir, `${smoke ? 'smoke' : 'bench'}-${stamp}`);
    const forJson = {
      ...report,
      runs: report.runs.map((r) => ({ ...r, latenciesMs: r.latenciesMs.length })),
    };
    const files = [`${base}.json`, `${base}.md`, `${base}.svg`];
    fs.writeFileSync(files[0], JSON.stringify(forJson, null, 2) + '\n');
    fs.writeFileSync(files[1], markdown(report));
    fs.writeFileSync(files[2], svg(report));
    if (!smoke) {
      for (const ext of ['json', 'md', 'svg']) {
        fs.copyFileSync(`${base}.${ext}`, path.join(outDir, `latest.${ext}`));
      }
    }
    return { report, files };
  } finally {
    await tmp.cleanup();
  }
}

if (require.main === module) {
  // Interrupted (Ctrl-C, kill), the bench still ends the daemons and consumers it started and
  // removes their mounts: a relay left running would skew every later measurement.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\nbench interrupted (${signal}): ending what it started\n`);
      void cleanupAll().finally(() => process.exit(128 + os.constants.signals[signal]));
    });
  }
  runBench({
    smoke: process.env.BENCH_SMOKE === '1',
    rounds: process.env.ROUNDS ? Number(process.env.ROUNDS) : undefined,
  }).then(
    ({ files }) => {
      process.stderr.write(`\nwrote ${files.join(', ')}\n`);
      process.stdout.write(fs.readFileSync(files[1], 'utf8'));
    },
    (err: unknown) => {
      process.stderr.write(`\nbench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
