/**
 * The receive worker's catch-up priority as a policy (src/netlink/catchUpPriority.ts): raised at
 * a full batch, lowered when caught up, never retried after a refusal, off when not asked for or
 * not above the thread's own. The real setpriority on a real thread is tested with the daemon
 * (test/daemon/catchUp.test.ts).
 */
import { CatchUpPriority, type SetThreadNice } from '../../src/netlink/catchUpPriority';

const TID = 4242;
const FULL = 32;

/** A setter that records each call and answers `refuse` (an error code) or success. */
function recorder(refuse?: string): { calls: number[]; set: SetThreadNice } {
  const calls: number[] = [];
  return {
    calls,
    set: (tid, nice) => {
      expect(tid).toBe(TID);
      calls.push(nice);
      return refuse;
    },
  };
}

test('probe raises and lowers once to learn that raising works', () => {
  const r = recorder();
  const p = new CatchUpPriority(TID, -10, 0, FULL, r.set);
  expect(p.probe()).toEqual({ kind: 'ready', nice: -10, base: 0 });
  expect(r.calls).toEqual([-10, 0]);
  expect(p.isRaised).toBe(false);
  expect(p.catchUps).toBe(0);
});

test('a full batch raises, batches still behind keep it raised, one at most lowers it', () => {
  const r = recorder();
  const p = new CatchUpPriority(TID, -10, 0, FULL, r.set);
  p.afterBatch(FULL - 1); // behind, but not by a full batch
  p.afterBatch(1);
  expect(r.calls).toEqual([]);
  p.afterBatch(FULL);
  expect(p.isRaised).toBe(true);
  p.afterBatch(FULL); // no second call while raised
  p.afterBatch(5);
  expect(r.calls).toEqual([-10]);
  p.afterBatch(1);
  expect(p.isRaised).toBe(false);
  expect(r.calls).toEqual([-10, 0]);
  p.afterBatch(0);
  expect(r.calls).toEqual([-10, 0]);
  expect(p.catchUps).toBe(1);
  p.afterBatch(FULL + 3);
  p.lower();
  p.lower();
  expect(r.calls).toEqual([-10, 0, -10, 0]);
  expect(p.catchUps).toBe(2);
});

test('an error from recvmmsg (a negative count) changes nothing', () => {
  const r = recorder();
  const p = new CatchUpPriority(TID, -10, 0, FULL, r.set);
  p.afterBatch(FULL);
  p.afterBatch(-105); // -ENOBUFS: still behind
  p.afterBatch(-11); // -EAGAIN: the caller lowers on a quiet second itself
  expect(p.isRaised).toBe(true);
  expect(r.calls).toEqual([-10]);
});

test('lowering restores the thread\u2019s own nice value, not 0', () => {
  const r = recorder();
  const p = new CatchUpPriority(TID, -10, 5, FULL, r.set);
  p.afterBatch(FULL);
  p.afterBatch(1);
  expect(r.calls).toEqual([-10, 5]);
});

test('off when not asked for, or when the thread already runs at that priority or higher', () => {
  for (const [nice, base] of [
    [undefined, 0],
    [-10, -10],
    [-10, -15],
  ] as const) {
    const r = recorder();
    const p = new CatchUpPriority(TID, nice, base, FULL, r.set);
    expect(p.probe()).toEqual({ kind: 'off', base });
    p.afterBatch(FULL);
    expect(p.isRaised).toBe(false);
    expect(r.calls).toEqual([]);
  }
});

test('a refused probe turns catching up off: the fast path never retries', () => {
  const r = recorder('EACCES');
  const p = new CatchUpPriority(TID, -10, 0, FULL, r.set);
  expect(p.probe()).toEqual({ kind: 'refused', nice: -10, base: 0, code: 'EACCES' });
  p.afterBatch(FULL);
  p.afterBatch(FULL);
  expect(r.calls).toEqual([-10]);
  expect(p.catchUps).toBe(0);
});

test('a raise refused later (the capability dropped) is not counted and not retried', () => {
  let refuse: string | undefined = undefined;
  const calls: number[] = [];
  const p = new CatchUpPriority(TID, -10, 0, FULL, (_tid, nice) => {
    calls.push(nice);
    return refuse;
  });
  expect(p.probe().kind).toBe('ready');
  refuse = 'EPERM';
  p.afterBatch(FULL);
  p.afterBatch(FULL);
  expect(p.isRaised).toBe(false);
  expect(p.catchUps).toBe(0);
  expect(calls).toEqual([-10, 0, -10]);
});

test('the shared counter counts each raise, for the main thread to read', () => {
  const shared = new Int32Array(new SharedArrayBuffer(8)).subarray(1, 2);
  const p = new CatchUpPriority(TID, -10, 0, FULL, recorder().set, shared);
  p.afterBatch(FULL);
  p.afterBatch(1);
  p.afterBatch(FULL);
  expect(Atomics.load(shared, 0)).toBe(2);
  expect(p.catchUps).toBe(2);
});
