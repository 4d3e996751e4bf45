/**
 * The shared table's memory of recent forks and of forks a recovery relayed late, driven from
 * both ends in one thread (ForkTable as the main thread, ForkSender as the receive worker).
 */
import fs from 'node:fs';
import {
  EPOLL_CLOEXEC,
  Errno,
  close,
  epollCreate1,
  readOrErrno,
  writeOrErrno,
} from '../../src/native/libc';
import {
  ForkSender,
  ForkTable,
  RECENT_FORKS,
  openWarmUpSender,
  type ForkRelayNotice,
} from '../../src/relay/forkTable';

let table: ForkTable;
let sender: ForkSender;
let epfd: number;
const notices: ForkRelayNotice[] = [];

beforeEach(() => {
  table = new ForkTable(40, false);
  epfd = epollCreate1(EPOLL_CLOEXEC);
  sender = new ForkSender(table.workerData(), epfd, (n) => notices.push(n));
  table.attached();
});

afterEach(() => {
  table.close();
  table.detached();
  close(epfd);
});

/** A fork at `ns` as the worker reads it from a datagram (timestamp halves, little-endian). */
function fork(child: number, ns: number, tgid = child): void {
  sender.onFork(1, child, tgid, (ns % 2 ** 32) | 0, Math.floor(ns / 2 ** 32) | 0);
}

test('the recent forks: the last one and those stamped since a time, across 2^32 ns', () => {
  expect(table.lastForkNs()).toBeUndefined();
  const base = 5 * 2 ** 32 - 1000; // the low half wraps in the middle
  fork(100, base);
  fork(101, base + 500);
  fork(102, base + 2000, 100); // a thread
  expect(table.lastForkNs()).toBe(base + 2000);
  expect([...table.recentSince(base + 500)].sort()).toEqual([101, 102]);
  expect(table.totals()).toMatchObject({ forksSeen: 3, threadsSeen: 1 });
});

test('the ring keeps the last RECENT_FORKS forks', () => {
  for (let i = 0; i < RECENT_FORKS + 10; i++) fork(1000 + i, 1e9 + i);
  const all = table.recentSince(0);
  expect(all.size).toBe(RECENT_FORKS);
  expect(all.has(1000)).toBe(false);
  expect(all.has(1000 + RECENT_FORKS + 9)).toBe(true);
});

test('a fork a recovery relayed is dropped once if stamped before the scan ended, not after', () => {
  table.markRecovered([200, 201], 2e9);
  fork(200, 1.5e9); // queued before the scan: relayed late already
  expect(table.totals().forksSeen).toBe(0);
  fork(200, 1.6e9); // the entry was used up: a later fork of the same id is new
  expect(table.totals().forksSeen).toBe(1);
  fork(201, 2.5e9); // after the scan: a new task that got the id
  expect(table.totals().forksSeen).toBe(2);
  expect(table.recentSince(0)).toEqual(new Set([200, 201]));
});

test("the doorbell: a change is taken and acknowledged; the watchdog's probe is not a change", () => {
  // The worker's side of the doorbell, read as the worker reads it (non-blocking eventfd).
  const { doorbellFd } = table.workerData();
  const rang = (): boolean => {
    const value = Buffer.alloc(8);
    const n = readOrErrno(doorbellFd, value);
    if (n === -Errno.EAGAIN) return false;
    expect(n).toBe(8);
    writeOrErrno(doorbellFd, value); // put it back for onDoorbell to read
    return true;
  };
  expect(rang()).toBe(false);
  notices.length = 0; // the sender's first sync, at its construction

  table.probeWorker();
  expect(rang()).toBe(true);
  sender.onDoorbell();
  expect(rang()).toBe(false); // read: a probe rings once
  expect(notices).toEqual([]); // no change, so no 'synced' notice for the main thread

  table.setSignal(41);
  expect(rang()).toBe(true);
  sender.onDoorbell();
  expect(notices).toEqual([{ kind: 'synced', version: expect.any(Number) }]);

  // With no worker attached there is no one to wake.
  table.detached();
  table.probeWorker();
  expect(rang()).toBe(false);
});

describe("the receive worker's warm-up sender", () => {
  const openFds = (): number => fs.readdirSync('/proc/self/fd').length;
  /** SigPnd and ShdPnd of this process, as /proc shows them. */
  const pending = (): string[] =>
    fs
      .readFileSync('/proc/self/status', 'utf8')
      .split('\n')
      .filter((l) => /^(SigPnd|ShdPnd):/.test(l));

  test('relays through a table of its own to this process, with signal 0, and closes what it opened', () => {
    const fdsBefore = openFds();
    const pendingBefore = pending();
    const warm = openWarmUpSender();
    expect(openFds()).toBe(fdsBefore + 3); // its pidfd, epoll set and doorbell
    const forks = 200;
    for (let i = 0; i < forks; i++) {
      // Process forks and threads, as the worker's warm-up makes them; one send each.
      const child = 0x40000001 + i;
      expect(warm.sender.onFork(0x40000000, child, i % 2 ? 0x40000000 : child, i * 1000, 0)).toBe(
        1,
      );
      if (i % 50 === 0) warm.republish();
    }
    // Every send succeeded: signal 0 is checked like any signal and delivered to no one (an RT
    // signal to ourselves would have ended this process, and nothing is pending).
    expect(warm.totals()).toMatchObject({
      forksSeen: forks,
      threadsSeen: forks / 2,
      forksRelayed: forks,
      signalsSent: forks,
      signalsFailed: 0,
      signalsLost: 0,
    });
    expect(pending()).toEqual(pendingBefore);
    // The test's own table (the daemon's, in the worker) saw none of it.
    expect(table.totals()).toMatchObject({ forksSeen: 0, signalsSent: 0 });
    expect(table.lastForkNs()).toBeUndefined();
    warm.close();
    warm.close(); // idempotent
    expect(openFds()).toBe(fdsBefore);
  });
});
