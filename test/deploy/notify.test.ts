/**
 * SystemdNotifier against a real AF_UNIX datagram socket standing in for systemd, at a path and at
 * an abstract address. A wrong address length (a trailing NUL on an abstract name) would name
 * another socket and the datagram would never arrive.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SystemdNotifier, notifySocketAddress } from '../../src/systemd/notify';
import { TempDir, cleanupAll, run } from '../support';
import { NotifyListener } from './notifyListener';

let tmp: string;
const listeners: NotifyListener[] = [];
const notifiers: SystemdNotifier[] = [];

beforeAll(() => {
  tmp = new TempDir('relayfork-notify-').path;
});

afterEach(() => {
  for (const n of notifiers.splice(0)) n.close();
  for (const l of listeners.splice(0)) l.close();
});

afterAll(cleanupAll);

let counter = 0;
function listen(kind: 'path' | 'abstract'): NotifyListener {
  counter++;
  const address =
    kind === 'path'
      ? path.join(tmp, `notify-${counter}.sock`)
      : `@relayfork-test-${process.pid}-${counter}`;
  const listener = new NotifyListener(address);
  listeners.push(listener);
  return listener;
}

function notifierFor(env: NodeJS.ProcessEnv): SystemdNotifier {
  const notifier = SystemdNotifier.fromEnvironment(env);
  notifiers.push(notifier);
  return notifier;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(['path', 'abstract'] as const)('at a %s address', (kind) => {
  test('READY, STATUS, STOPPING and WATCHDOG arrive as the exact datagrams sd_notify sends', async () => {
    const listener = listen(kind);
    const notifier = notifierFor({ NOTIFY_SOCKET: listener.address });
    expect(notifier.enabled).toBe(true);

    expect(notifier.ready('1 registrant, signal 40')).toBe(true);
    expect(notifier.status('two\nlines\r\nbecome one')).toBe(true);
    expect(notifier.watchdog()).toBe(true);
    expect(notifier.stopping()).toBe(true);
    expect(notifier.ready()).toBe(true);

    await listener.waitForMessages('READY', 2, 5000);
    expect(listener.messages.map((m) => m.text)).toEqual([
      'READY=1\nSTATUS=1 registrant, signal 40',
      'STATUS=two lines become one',
      'WATCHDOG=1',
      'STOPPING=1',
      'READY=1',
    ]);
    expect(notifier.failedSends).toBe(0);
  });

  test('a send to a socket nobody listens on returns false, is counted, and never throws', async () => {
    const listener = listen(kind);
    const notifier = notifierFor({ NOTIFY_SOCKET: listener.address });
    expect(notifier.status('first')).toBe(true);
    await listener.waitForMessages('STATUS', 1, 5000);
    listener.close();

    expect(notifier.status('lost')).toBe(false);
    expect(notifier.ready()).toBe(false);
    expect(notifier.failedSends).toBe(2);
  });
});

test('the abstract address is the name without a trailing NUL, the path one keeps it', () => {
  const abstract = notifySocketAddress('@abc') as Buffer;
  expect([...abstract]).toEqual([1, 0, 0, ...Buffer.from('abc')]);
  const file = notifySocketAddress('/run/x') as Buffer;
  expect([...file]).toEqual([1, 0, ...Buffer.from('/run/x'), 0]);
});

test('outside systemd (NOTIFY_SOCKET unset) every call does nothing', () => {
  const notifier = notifierFor({});
  expect(notifier.enabled).toBe(false);
  expect(notifier.disabledReason).toMatch(/not set/);
  expect(notifier.ready('x')).toBe(false);
  expect(notifier.status('x')).toBe(false);
  expect(notifier.stopping()).toBe(false);
  expect(notifier.startWatchdog()).toBeUndefined();
  expect(notifier.failedSends).toBe(0);
});

test('an unusable NOTIFY_SOCKET gives a no-op notifier with the reason, not an exception', () => {
  for (const value of ['relative/notify', '@', `/${'x'.repeat(107)}`, `@${'x'.repeat(108)}`]) {
    const notifier = notifierFor({ NOTIFY_SOCKET: value });
    expect(notifier.enabled).toBe(false);
    expect(notifier.disabledReason).toContain('NOTIFY_SOCKET=');
    expect(notifier.ready()).toBe(false);
  }
  // The longest usable addresses: 107 path bytes + NUL, and 107 abstract name bytes + leading NUL.
  expect(notifierFor({ NOTIFY_SOCKET: `/${'x'.repeat(106)}` }).enabled).toBe(true);
  expect(notifierFor({ NOTIFY_SOCKET: `@${'x'.repeat(107)}` }).enabled).toBe(true);
});

test('WATCHDOG_USEC gives the interval, unless WATCHDOG_PID names another process', () => {
  const base = { NOTIFY_SOCKET: '/run/systemd/notify', WATCHDOG_USEC: '30000000' };
  expect(notifierFor(base).watchdogIntervalMs()).toBe(30000);
  expect(notifierFor({ ...base, WATCHDOG_PID: String(process.pid) }).watchdogIntervalMs()).toBe(
    30000,
  );
  expect(notifierFor({ ...base, WATCHDOG_PID: String(process.pid + 1) }).watchdogIntervalMs()).toBe(
    undefined,
  );
  for (const usec of ['0', '', 'abc', '-5', '1e6']) {
    expect(notifierFor({ ...base, WATCHDOG_USEC: usec }).watchdogIntervalMs()).toBeUndefined();
  }
  expect(notifierFor({ NOTIFY_SOCKET: '/run/systemd/notify' }).watchdogIntervalMs()).toBe(
    undefined,
  );
});

test('the watchdog pings WATCHDOG=1 at half the interval, once however often it is started', async () => {
  const listener = listen('abstract');
  // 1 s interval: pings every 500 ms; systemd would kill the service after a 1 s silence.
  const notifier = notifierFor({ NOTIFY_SOCKET: listener.address, WATCHDOG_USEC: '1000000' });
  expect(notifier.startWatchdog()).toBe(500);
  expect(notifier.startWatchdog()).toBe(500);
  const start = Date.now();
  await sleep(2800);
  const pings = listener.with('WATCHDOG').map((m) => m.at);
  // One timer, not two: 5 pings in 2.8 s (a second timer would double them).
  expect(pings.length).toBeGreaterThanOrEqual(4);
  expect(pings.length).toBeLessThanOrEqual(6);
  const gaps = [pings[0] - start, ...pings.slice(1).map((t, i) => t - pings[i])];
  for (const gap of gaps) {
    expect(gap).toBeGreaterThanOrEqual(400);
    expect(gap).toBeLessThan(1000);
  }

  notifier.close();
  notifier.close();
  const count = listener.with('WATCHDOG').length;
  await sleep(1200);
  expect(listener.with('WATCHDOG').length).toBe(count);
  expect(notifier.ready()).toBe(false);
});

test('the watchdog timer does not keep a process alive', async () => {
  const listener = listen('path');
  const notifyJs = path.resolve(__dirname, '../../dist/systemd/notify.js');
  expect(fs.existsSync(notifyJs)).toBe(true);
  const script = `
    const { SystemdNotifier } = require(${JSON.stringify(notifyJs)});
    const n = SystemdNotifier.fromEnvironment();
    n.startWatchdog();
    n.ready('child');
  `;
  const { code, signal } = await run(process.execPath, ['-e', script], {
    env: { ...process.env, NOTIFY_SOCKET: listener.address, WATCHDOG_USEC: '200000' },
    timeoutMs: 10000,
  });
  expect({ code, signal }).toEqual({ code: 0, signal: null });
  await listener.waitForMessages('READY', 1, 2000);
  expect(listener.with('READY')[0].fields.get('STATUS')).toBe('child');
});
