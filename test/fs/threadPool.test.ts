/**
 * The FUSE server waits on libuv's pool (src/fs/fuseReader.ts), so a daemon whose pool has one
 * thread must refuse to start: threadPoolSize() reads UV_THREADPOOL_SIZE as libuv does, checked
 * here against the Node running the tests by counting a child's threads.
 */
import { execFileSync } from 'node:child_process';
import { checkThreadPool, threadPoolSize } from '../../src/fs/preflight';

/** Threads of a Node child with UV_THREADPOOL_SIZE=value, once its pool has run an fs call. */
function threadsWith(value: string | undefined): number {
  const env = { ...process.env };
  if (value === undefined) delete env.UV_THREADPOOL_SIZE;
  else env.UV_THREADPOOL_SIZE = value;
  const script =
    "require('fs').stat('/', () => console.log(require('fs').readdirSync('/proc/self/task').length))";
  return Number(execFileSync(process.execPath, ['-e', script], { env, encoding: 'utf8' }).trim());
}

describe('threadPoolSize reads UV_THREADPOOL_SIZE as libuv does', () => {
  const cases: [string | undefined, number][] = [
    [undefined, 4],
    ['4', 4],
    ['2', 2],
    ['1', 1],
    ['0', 1],
    ['', 1],
    ['abc', 1],
    ['3x', 3],
    [' 5', 5],
    ['+6', 6],
  ];

  test.each(cases)('%j gives %i', (value, size) => {
    expect(threadPoolSize(value)).toBe(size);
  });

  test('values out of range', () => {
    expect(threadPoolSize('-1')).toBe(1024);
    expect(threadPoolSize('5000')).toBe(1024);
  });

  test('as the Node running this test starts its pool', () => {
    // The same process apart from the pool: the difference from the default (4) is the pool's.
    const base = threadsWith(undefined) - 4;
    for (const [value, size] of cases)
      expect([value, threadsWith(value) - base]).toEqual([value, size]);
  });
});

describe('checkThreadPool', () => {
  test.each(['1', '0', 'abc'])('refuses %j in one line that says what to do', (value) => {
    expect(() => checkThreadPool(value)).toThrow(
      expect.objectContaining({
        code: 'THREAD_POOL',
        message: expect.stringMatching(/^[^\n]*at least 2[^\n]*set it to 2 or more$/),
      }),
    );
  });

  test.each([undefined, '2', '4', '128'])('accepts %j', (value) => {
    expect(() => checkThreadPool(value)).not.toThrow();
  });
});
