/**
 * The shared table's memory of recent forks and of forks a recovery relayed late, driven from
 * both ends in one thread (ForkTable as the main thread, ForkSender as the receive worker).
 */
import { EPOLL_CLOEXEC, close, epollCreate1 } from '../../src/native/libc';
import {
  ForkSender,
  ForkTable,
  RECENT_FORKS,
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
