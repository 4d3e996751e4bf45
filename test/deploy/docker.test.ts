/**
 * Across the container boundary: the daemon runs in Docker exactly as docker/compose.yaml runs it
 * (privileged, host pid and network namespaces, /dev/fuse, the host's /run bound rshared),
 * and a consumer on the host registers through the propagated mount and receives one SI_ASYNCIO
 * signal per fork the test makes on the host. Without --pid=host the daemon refuses to start with
 * its namespace message.
 *
 * Needs a Docker engine (../shared/tools/docker-env.sh up, started here if none runs) and
 * docker-compose; the images come from docker/build.sh (cached layers: seconds when unchanged).
 *
 * README's Docker commands run as README writes them (taken from README.md itself), with two
 * substitutions: the host's /run is a temporary directory of this test (this machine's real /run
 * is not ours to re-mount), handed to compose.yaml as RELAYFORK_HOST_RUN; and `docker compose`
 * is `docker-compose -p <project>` (Compose v1, as README allows: Debian 12 has no v2).
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  Child,
  ROOT,
  TempDir,
  cleanupAll,
  compileFixture,
  execFileAsync,
  isMounted,
  mountTypeAt,
  parseSignals,
  spawnChild,
  waitFor,
  runForker,
} from '../support';
import { RELAY_SIGNAL, SI_ASYNCIO, consumerArgs } from '../daemon/harness';

const SHARED_TOOLS =
  process.env.RELAYFORK_SHARED_TOOLS ?? path.resolve(ROOT, '..', 'shared', 'tools');
const IMAGE = process.env.RELAYFORK_IMAGE ?? 'relayfork:latest';
const COMPOSE_FILE = path.join(ROOT, 'docker', 'compose.yaml');
const PROJECT = `relayfork-e2e-${process.pid}`;
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');

/** A command README.md shows in an indented code block, without its trailing comment. */
function readmeCommand(command: string): string {
  const lines = README.split('\n')
    .filter((l) => l.startsWith('    '))
    .map((l) => l.trim().replace(/\s+#.*$/, ''));
  if (!lines.includes(command)) throw new Error(`README.md no longer shows \`${command}\``);
  return command;
}

let tmp: TempDir;
/** Stands for the host's /run (a shared mount, as systemd makes it). */
let hostRun: string;
/** The host's /run/relayfork, where the container's FUSE mount must appear. */
let hostMount: string;
let engineStartedHere = false;
let consumer: Child | undefined;
const containers: string[] = [];

async function run(file: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  try {
    return await execFileAsync(file, args, { env, cwd: ROOT, maxBuffer: 64 << 20 });
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(`${file} ${args.join(' ')} failed: ${e.message}\n${e.stdout}${e.stderr}`, {
      cause: err,
    });
  }
}

function compose(...args: string[]) {
  return run('docker-compose', ['-p', PROJECT, '-f', COMPOSE_FILE, ...args], composeEnv());
}

/** README's `docker compose -f docker/compose.yaml ...` line, run with Compose v1. */
function readmeCompose(command: string) {
  const words = readmeCommand(command).split(' ');
  expect(words.slice(0, 2)).toEqual(['docker', 'compose']);
  return run('docker-compose', ['-p', PROJECT, ...words.slice(2)], composeEnv());
}

function composeEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    RELAYFORK_IMAGE: IMAGE,
    RELAYFORK_HOST_RUN: hostRun,
  };
}

async function engineRunning(): Promise<boolean> {
  return execFileAsync('docker', ['info']).then(
    () => true,
    () => false,
  );
}

beforeAll(async () => {
  if (process.geteuid?.() !== 0) throw new Error('the Docker tests need root');
  for (const tool of ['docker', 'docker-compose']) {
    await execFileAsync(tool, ['--version']).catch((err: unknown) => {
      throw new Error(`${tool} is missing: run npm run test:docker, which installs it`, {
        cause: err,
      });
    });
  }
  if (!(await engineRunning())) {
    engineStartedHere = true;
    await run(path.join(SHARED_TOOLS, 'docker-env.sh'), ['up']);
  }
  // README: where no registry serves node:24-bookworm-slim, docker/build.sh first.
  await run(path.join(ROOT, readmeCommand('docker/build.sh')), []);

  tmp = new TempDir('relayfork-docker-');
  // The host's /run for this test, a plain directory made a shared mount (this host's / is
  // private) by README's command for that case, so the container's FUSE mount propagates back.
  hostRun = tmp.join('run');
  hostMount = path.join(hostRun, 'relayfork');
  fs.mkdirSync(hostRun);
  const share = readmeCommand('mount --rbind /run /run && mount --make-rshared /run');
  await run('sh', ['-c', share.replace(/\/run\b/g, hostRun)]);
  expect(
    fs
      .readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[4] === hostRun && / shared:\d+/.test(l)),
  ).toBe(true);
});

afterAll(async () => {
  if (hostMount)
    await compose('down', '--remove-orphans', '--timeout', '15').catch(() => undefined);
  for (const id of containers)
    await execFileAsync('docker', ['rm', '-f', id]).catch(() => undefined);
  // The consumer; a FUSE mount left by a daemon that was killed, then our own bind.
  await cleanupAll();
  if (engineStartedHere) await run(path.join(SHARED_TOOLS, 'docker-env.sh'), ['down']);
});

test('the daemon in the container relays host forks to a host consumer through the rshared mount', async () => {
  // README: docker/build.sh (beforeAll), then up without --build.
  await readmeCompose('docker compose -f docker/compose.yaml up -d');
  const { stdout: id } = await compose('ps', '-q', 'relayfork');
  const container = id.trim();
  expect(container).not.toBe('');
  containers.push(container);
  await waitFor(
    'the daemon in the container to log ready',
    async () => {
      const { stdout, stderr } = await execFileAsync('docker', ['logs', container]);
      if (/error/.test(stdout + stderr)) throw new Error(`the daemon failed:\n${stdout}${stderr}`);
      return /ready: relaying forks/.test(stdout + stderr);
    },
    60000,
  );
  // The FUSE mount made in the container's mount namespace is on the host now, at /run/relayfork.
  expect(mountTypeAt(hostMount)).toBe('fuse.relayfork');
  expect(fs.readFileSync(path.join(hostMount, 'signal'), 'utf8')).toBe(`${RELAY_SIGNAL}\n`);

  const registrant = await compileFixture('rt_consumer', tmp.path);
  const forker = await compileFixture('forker', tmp.path);
  consumer = spawnChild(registrant, consumerArgs(path.join(hostMount, 'processes')));
  await consumer.waitForLine(/^ready$/, 'stdout');
  const consumerPid = consumer.pid;
  expect(fs.readFileSync(path.join(hostMount, 'processes'), 'utf8')).toBe(`${consumerPid} \n`);

  // Forks made on the host, seen by the container's daemon, signalled to the host consumer.
  const forks = await runForker(forker, 3, 2);
  expect(forks).toHaveLength(5);
  const key = (parent: number, child: number) => `${parent}>${child}`;
  const wanted = new Set(forks.map(([p, c]) => key(p, c)));
  const received = () =>
    parseSignals(consumer?.stdout ?? []).filter((s) => wanted.has(key(s.pid, s.val)));
  await waitFor('a signal for every fork', () => received().length >= forks.length, 15000);
  // Exactly one per fork, each with the patch's siginfo.
  expect(
    received()
      .map((s) => key(s.pid, s.val))
      .sort(),
  ).toEqual([...wanted].sort());
  for (const s of received())
    expect({ sig: s.sig, code: s.code }).toEqual({ sig: RELAY_SIGNAL, code: SI_ASYNCIO });

  // docker stop (SIGTERM): the daemon unmounts, and the unmount propagates to the host too.
  await consumer.stop('SIGTERM');
  await compose('stop', '--timeout', '15');
  const { stdout: exit } = await run('docker', ['inspect', '-f', '{{.State.ExitCode}}', container]);
  expect(exit.trim()).toBe('0');
  expect(isMounted(hostMount)).toBe(false);
  expect(mountTypeAt(hostRun)).not.toMatch(/^fuse/); // only our own bind is left
  // The daemon created /run/relayfork: the entry point removed it after the unmount.
  expect(fs.existsSync(hostMount)).toBe(false);
  await readmeCompose('docker compose -f docker/compose.yaml down');
  const { stdout: left } = await run('docker', ['ps', '-aq', '--filter', `id=${container}`]);
  expect(left.trim()).toBe('');
});

test('without --pid=host the daemon refuses to start, naming the namespace and the fix', async () => {
  const name = `${PROJECT}-nopidhost`;
  containers.push(name);
  let failure: { code?: number; stdout?: string; stderr?: string } | undefined;
  try {
    await execFileAsync(
      'docker',
      [
        'run',
        '--name',
        name,
        '--privileged',
        '--net=host',
        '--device',
        '/dev/fuse',
        IMAGE,
        '--signal',
        '40',
      ],
      { timeout: 60000 },
    );
  } catch (err) {
    failure = err as typeof failure;
  }
  expect(failure).toBeDefined();
  expect(failure?.code).toBe(1);
  const errors = `${failure?.stdout}${failure?.stderr}`.split('\n').filter((l) => /error/.test(l));
  expect(errors).toHaveLength(1);
  expect(errors[0]).toMatch(/proc connector.*pid.*namespace.*--pid=host/);
});
