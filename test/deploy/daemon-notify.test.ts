/**
 * The daemon's side of the sd_notify protocol, with a real datagram socket standing in for
 * systemd: `node dist/cli.js` started as systemd would start it (NOTIFY_SOCKET, WATCHDOG_USEC).
 * READY=1 only once the mount is live, STATUS= lines a person can read, WATCHDOG=1 at the
 * configured interval, STOPPING=1 on SIGTERM.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Child, TempDir, cleanupAll, isMounted, spawnChild, sleep, waitFor } from '../support';
import { Daemon, requireRootAndBuild } from '../daemon/harness';
import { NotifyListener } from './notifyListener';

requireRootAndBuild();

let tmp: TempDir;
let listener: NotifyListener;
let sleeper: Child | undefined;
const mountpoint = () => tmp.join('mnt');

beforeAll(() => {
  tmp = new TempDir('relayfork-notify-daemon-');
});

afterAll(async () => {
  await cleanupAll();
  listener?.close();
});

test('READY=1 after the mount, readable STATUS=, WATCHDOG=1 pings, STOPPING=1 on SIGTERM', async () => {
  listener = new NotifyListener(tmp.join('notify.sock'));
  // What the mount table says at the moment each READY=1 is read.
  const mountedAtReady: boolean[] = [];
  listener.onMessage((m) => {
    if (m.fields.get('READY') === '1') mountedAtReady.push(isMounted(mountpoint()));
  });

  // WatchdogSec=2s: systemd would kill a service silent for 2 s; it should ping every second.
  const watchdogMs = 2000;
  const daemon = new Daemon(mountpoint(), ['--no-state', '--signal', '40'], [], {
    ...process.env,
    NOTIFY_SOCKET: listener.address,
    WATCHDOG_USEC: String(watchdogMs * 1000),
  });
  const [ready] = await listener.waitForMessages('READY', 1, 30000);
  expect(mountedAtReady).toEqual([true]);
  expect(daemon.stderr.some((line) => /ready: relaying forks/.test(line))).toBe(true);
  // The STATUS= sent with READY=1 already says what the daemon is doing.
  expect(ready.fields.get('STATUS')).toMatch(/registrant/);

  // A registrant, then the periodic STATUS= must count it.
  // It ignores the relay signal (an ignored signal stays ignored across exec): signal 40's
  // default action would end it at the next fork on the machine, and with it the count.
  sleeper = spawnChild('sh', ['-c', 'trap "" 40; exec sleep 600']);
  const { pid } = sleeper;
  await waitFor("the trap to be in place (sh exec'd sleep)", () =>
    fs.readFileSync(`/proc/${pid}/comm`, 'latin1').startsWith('sleep'),
  );
  fs.writeFileSync(path.join(mountpoint(), 'processes'), `${sleeper.pid}\n`);
  await waitFor(
    () =>
      `a STATUS= counting 1 registrant: ${JSON.stringify(listener.with('STATUS').map((m) => m.text))}`,
    () => listener.with('STATUS').some((m) => /\b1 registrant/.test(m.fields.get('STATUS') ?? '')),
    15000,
  );
  for (const m of listener.with('STATUS')) {
    // One line of printable text, as `systemctl status` shows it.
    expect(m.fields.get('STATUS')).toMatch(/^[\x20-\x7e]+$/);
  }

  // Watchdog pings: never a gap as long as WatchdogSec, and not a flood either.
  const pings = listener.with('WATCHDOG').map((m) => m.at);
  expect(pings.length).toBeGreaterThanOrEqual(3);
  for (const [i, at] of pings.entries()) {
    const previous = i === 0 ? ready.at : pings[i - 1];
    expect(at - previous).toBeLessThan(watchdogMs);
    if (i > 0) expect(at - previous).toBeGreaterThanOrEqual(watchdogMs / 4);
  }

  const { code, signal } = await daemon.stop('SIGTERM');
  listener.drain();
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  const stopping = listener.with('STOPPING');
  expect(stopping).toHaveLength(1);
  expect(stopping[0].fields.get('STOPPING')).toBe('1');
  // Nothing claims readiness again after STOPPING=1.
  expect(
    listener.messages
      .slice(listener.messages.indexOf(stopping[0]))
      .some((m) => m.fields.has('READY')),
  ).toBe(false);
  expect(isMounted(mountpoint())).toBe(false);
});

test('with systemd gone (nobody on NOTIFY_SOCKET) the daemon still runs and stops cleanly', async () => {
  const gone = tmp.join('gone.sock');
  const run = new Daemon(tmp.join('gone'), ['--no-state', '--signal', '40'], [], {
    ...process.env,
    NOTIFY_SOCKET: gone,
    WATCHDOG_USEC: '200000',
  });
  await run.waitForLine(/ready: relaying forks/, 'stderr', 30000);
  // Every READY, STATUS and WATCHDOG (every 100 ms) send fails; none may take the daemon down.
  await sleep(1500);
  expect(run.running).toBe(true);
  expect(fs.readFileSync(path.join(tmp.join('gone'), 'signal'), 'utf8')).toBe('40\n');
  const { code, signal } = await run.stop('SIGTERM');
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  expect(run.stderr.filter((line) => /error/.test(line))).toEqual([]);
});
