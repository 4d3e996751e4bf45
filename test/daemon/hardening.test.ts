/**
 * What an adversarial local user tried against the root daemon (issue 9 §5), each through the
 * daemon a user runs: it must neither be taken over nor stopped, nor signal itself, nor let a
 * registrant forge log lines, and errors that are not the writer's fault say so.
 */
import fs from 'node:fs';
import { CLI, TempDir, cleanupAll, isMounted, spawnChild, waitFor } from '../support';
import { Daemon, requireRootAndBuild } from './harness';

requireRootAndBuild();

let tmp: TempDir;

beforeAll(() => {
  tmp = new TempDir();
});

afterAll(cleanupAll);

async function startDaemon(name: string, args: string[] = ['--signal', '40'], prefix?: string[]) {
  const d = new Daemon(tmp.join(name), args, prefix);
  await d.waitForLine(/ready: relaying forks/, 'stderr', 20000);
  return d;
}

/**
 * A process of ours to register, which ignores signal 40 (ignored signals survive exec): it is
 * returned once its comm is `comm`, i.e. once the trap is in place.
 */
function ignoring40(script: string, comm: string): number {
  // A process group of its own, ended whole in cleanup: a shell's background sleep would
  // outlive the shell.
  const { pid } = spawnChild('sh', ['-c', `trap "" 40; ${script}`], {
    output: 'ignore',
    group: true,
  });
  const deadline = Date.now() + 5000;
  while (fs.readFileSync(`/proc/${pid}/comm`, 'latin1') !== `${comm}\n`) {
    if (Date.now() > deadline) throw new Error(`${script} did not start`);
  }
  return pid;
}

function sleeper(): number {
  return ignoring40('exec sleep 1000', 'sleep');
}

/** The socket inodes the process `pid` holds. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  return inodes;
}

/** TCP sockets in LISTEN state (st 0A) among `inodes`, as "address:port" in hex. */
function listeningTcp(inodes: Set<string>): string[] {
  const found: string[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of fs.readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 9 && f[3] === '0A' && inodes.has(f[9])) found.push(f[1]);
    }
  }
  return found;
}

function writeFile(file: string, text: string): string {
  try {
    fs.writeFileSync(file, text);
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

test('SIGUSR1 opens no inspector: the root daemon listens on no TCP port and keeps serving', async () => {
  const d = await startDaemon('usr1');
  // Node's own behaviour, for contrast: a plain node process does open the inspector.
  const plain = spawnChild(process.execPath, ['-e', 'setTimeout(() => {}, 20000)']);
  try {
    await waitFor('the plain node to start', () => fs.existsSync(`/proc/${plain.pid}/fd`));
    await new Promise((r) => setTimeout(r, 300));
    process.kill(plain.pid, 'SIGUSR1');
    await waitFor(
      'the plain node to open its inspector',
      () => listeningTcp(socketInodes(plain.pid)).length > 0,
      10000,
    );
  } finally {
    await plain.stop('SIGKILL');
  }

  process.kill(d.pid, 'SIGUSR1');
  // Give the inspector every chance to start (it took well under a second above).
  await new Promise((r) => setTimeout(r, 1500));
  expect(d.running).toBe(true);
  expect(listeningTcp(socketInodes(d.pid))).toEqual([]);
  expect(d.output()).not.toMatch(/Debugger listening/);
  expect(fs.readFileSync(d.file('signal'), 'utf8')).toBe('40\n');
});

test('SIGHUP is logged and ignored: the daemon keeps its mount and its registrants', async () => {
  const d = await startDaemon('hup');
  const pid = sleeper();
  fs.writeFileSync(d.file('processes'), String(pid));
  process.kill(d.pid, 'SIGHUP');
  await d.waitForLine(/SIGHUP received/, 'stderr');
  expect(d.running).toBe(true);
  expect(isMounted(d.mountpoint)).toBe(true);
  expect(fs.readFileSync(d.file('processes'), 'utf8')).toBe(`${pid} \n`);
  const { code } = await d.stop('SIGTERM');
  expect(code).toBe(0);
  expect(isMounted(d.mountpoint)).toBe(false);
});

test('a closed stderr does not stop the daemon: log lines that cannot be written are dropped', async () => {
  const d = await startDaemon('stderr');
  d.proc.stderr?.destroy(); // our end of its stderr pipe: its next log write gets EPIPE
  const pid = sleeper();
  // Each of these logs a line at info.
  fs.writeFileSync(d.file('processes'), String(pid));
  fs.writeFileSync(d.file('processes'), `-${pid}`);
  process.kill(d.pid, 'SIGHUP');
  fs.writeFileSync(d.file('processes'), String(pid));
  await new Promise((r) => setTimeout(r, 500));
  expect(d.running).toBe(true);
  expect(fs.readFileSync(d.file('processes'), 'utf8')).toBe(`${pid} \n`);
  const { code, signal } = await d.stop('SIGTERM');
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  expect(isMounted(d.mountpoint)).toBe(false);
});

test('the daemon refuses its own pid and thread ids (ignored; EINVAL with --strict) and lives on', async () => {
  const plain = await startDaemon('self');
  const strict = await startDaemon('self-strict', ['--signal', '40', '--strict']);
  for (const d of [plain, strict]) {
    const ids = fs.readdirSync(`/proc/${d.pid}/task`).map(Number);
    expect(ids.length).toBeGreaterThan(1); // the main thread and at least the receive worker
    for (const id of ids) {
      expect(writeFile(d.file('processes'), String(id))).toBe(d === strict ? 'EINVAL' : 'ok');
    }
    expect(fs.readFileSync(d.file('processes'), 'utf8')).toBe('\n');
    await d.waitForLine(new RegExp(`pid ${d.pid} is relayfork itself`), 'stderr');
  }
  // Forks keep happening (these writes' sleepers, the test itself): nobody was signalled.
  const pid = sleeper();
  fs.writeFileSync(plain.file('processes'), String(pid));
  await new Promise((r) => setTimeout(r, 300));
  expect(plain.running && strict.running).toBe(true);
});

test('a registrant cannot forge a log line through its command name', async () => {
  const d = await startDaemon('comm');
  // A process may name itself anything (15 bytes), newlines included: this shell does, through
  // /proc/$$/comm, then waits.
  const pid = ignoring40(
    'printf "x\\nerror: forged" > /proc/$$/comm; sleep 1000 & wait',
    'x\nerror: forged',
  );
  fs.writeFileSync(d.file('processes'), String(pid));
  const line = await d.waitForLine(new RegExp(`pid ${pid} .* registered`), 'stderr');
  expect(line).toContain('(x\\nerror: forged)');
  expect(d.stderr.some((l) => l.startsWith('error: forged'))).toBe(false);
});

test('EMFILE from pidfd_open reaches the writer as EMFILE, and the log says to raise LimitNOFILE', async () => {
  // An open-file limit a little above what the daemon needs for itself.
  const d = await startDaemon('emfile', ['--signal', '40'], ['prlimit', '--nofile=64:64']);
  let outcome = 'ok';
  let registered = 0;
  for (let i = 0; i < 80 && outcome === 'ok'; i++) {
    outcome = writeFile(d.file('processes'), String(sleeper()));
    if (outcome === 'ok') registered++;
  }
  expect(outcome).toBe('EMFILE');
  expect(registered).toBeGreaterThan(0);
  await d.waitForLine(/open-file limit.*LimitNOFILE/, 'stderr');
  // Nothing accepted was dropped, and the daemon serves on.
  const listed = fs.readFileSync(d.file('processes'), 'utf8').trim().split(' ');
  expect(listed).toHaveLength(registered);
  expect(d.running).toBe(true);
});

test('SIGTERM during start-up ends it there: nothing is mounted afterwards, exit 0', async () => {
  // Delays that land in the subscription, the self-test and the mount on this machine kind.
  for (const delayMs of [0, 100, 250, 400, 600]) {
    const mp = tmp.join(`early-${delayMs}`);
    const child = spawnChild(process.execPath, [
      CLI,
      '--mountpoint',
      mp,
      '--no-state',
      '--signal',
      '40',
    ]);
    await waitFor('the daemon to start', () => child.stderr.length > 0 || !child.running, 20000);
    await new Promise((r) => setTimeout(r, delayMs));
    const { code, signal } = await child.stop('SIGTERM', 20000);
    expect({ delayMs, code, signal }).toEqual({ delayMs, code: 0, signal: null });
    // Whatever start-up had reached, nothing of it outlives the daemon.
    await new Promise((r) => setTimeout(r, 200));
    expect(isMounted(mp)).toBe(false);
    if (child.stderr.some((l) => /ready: relaying forks/.test(l))) continue; // the signal came after start-up
    expect(child.stderr.some((l) => /SIGTERM received/.test(l))).toBe(true);
  }
});
