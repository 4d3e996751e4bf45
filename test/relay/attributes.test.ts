/**
 * Issue 3 §4, every row, through the attributes with a real Registry: the ids are live children
 * of this test (a process and a thread of a threaded one), a free pid, pid_max and above, and
 * digit strings long enough to overflow the patch's unsigned long.
 */
import fs from 'node:fs';
import { Writable } from 'node:stream';
import winston from 'winston';
import { createPatchAttributes, type PatchAttributes } from '../../src/relay/attributes';
import { syscallError } from '../../src/native/libc';
import { Relay } from '../../src/relay/relay';
import { compileFixture, TempDir, requireRoot, waitFor, cleanupAll } from '../support';
import { Consumer, otherThreadIds, pidMax, TEST_SIGNAL, unusedPid } from './helpers';

let dir: string;
let binary: string;
let first: Consumer;
let second: Consumer;
let threaded: Consumer;
let threadId: number;

beforeAll(async () => {
  requireRoot();
  dir = new TempDir('relayfork-relay-').path;
  binary = await compileFixture('rt_consumer', dir);
  first = await Consumer.start(binary);
  second = await Consumer.start(binary);
  threaded = await Consumer.start(binary, { args: ['--thread'] });
  const tids = otherThreadIds(threaded.pid);
  expect(tids).toHaveLength(1);
  threadId = tids[0];
});

afterAll(cleanupAll);

let relay: Relay;
beforeEach(() => {
  relay = new Relay({ signal: TEST_SIGNAL });
});
afterEach(() => {
  relay.close();
});

/** Placeholders in the table rows, resolved once the children exist. */
function fill(template: string): string {
  const pidMaxValue = pidMax();
  return template
    .replace(/\{pid\}/g, String(first.pid))
    .replace(/\{tid\}/g, String(threadId))
    .replace(/\{unused\}/g, String(unusedPid()))
    .replace(/\{pidMax\}/g, String(pidMaxValue))
    .replace(/\{pidMax\+1\}/g, String(pidMaxValue + 1));
}

type Outcome = 'accepted' | 'rejected';
interface ProcessesRow {
  row: string;
  write: string;
  /** Register {pid} before the write. */
  before: 'empty' | 'registered';
  plain: Outcome;
  strict: Outcome;
  /** The ids afterwards, as templates. */
  after: string[];
}

const processesRows: ProcessesRow[] = [
  // rfd_strtoi gives 0: "nothing to do"
  { row: '"0"', write: '0', before: 'empty', plain: 'accepted', strict: 'rejected', after: [] },
  { row: '"-0"', write: '-0', before: 'empty', plain: 'accepted', strict: 'rejected', after: [] },
  { row: 'empty', write: '', before: 'empty', plain: 'accepted', strict: 'rejected', after: [] },
  { row: '"\\n"', write: '\n', before: 'empty', plain: 'accepted', strict: 'rejected', after: [] },
  { row: '"abc"', write: 'abc', before: 'empty', plain: 'accepted', strict: 'rejected', after: [] },
  {
    row: '"+pid"',
    write: '+{pid}',
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  {
    row: '" pid"',
    write: ' {pid}',
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  {
    row: '"--pid" (one "-" skipped, then no digit)',
    write: '--{pid}',
    before: 'registered',
    plain: 'accepted',
    strict: 'rejected',
    after: ['{pid}'],
  },
  {
    row: '"0" while registered',
    write: '0',
    before: 'registered',
    plain: 'accepted',
    strict: 'rejected',
    after: ['{pid}'],
  },
  // register
  {
    row: '"pid\\n"',
    write: '{pid}\n',
    before: 'empty',
    plain: 'accepted',
    strict: 'accepted',
    after: ['{pid}'],
  },
  {
    row: '"pid" (no newline)',
    write: '{pid}',
    before: 'empty',
    plain: 'accepted',
    strict: 'accepted',
    after: ['{pid}'],
  },
  {
    row: '"pidabc"',
    write: '{pid}abc',
    before: 'empty',
    plain: 'accepted',
    strict: 'accepted',
    after: ['{pid}'],
  },
  {
    row: '"pid 999"',
    write: '{pid} 999',
    before: 'empty',
    plain: 'accepted',
    strict: 'accepted',
    after: ['{pid}'],
  },
  {
    row: 'a thread id',
    write: '{tid}\n',
    before: 'empty',
    plain: 'accepted',
    strict: 'accepted',
    after: ['{tid}'],
  },
  {
    row: 'already registered (idempotent, also in strict mode)',
    write: '{pid}\n',
    before: 'registered',
    plain: 'accepted',
    strict: 'accepted',
    after: ['{pid}'],
  },
  // no such task
  {
    row: 'a free pid',
    write: '{unused}\n',
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  {
    row: 'pid_max itself',
    write: '{pidMax}\n',
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  {
    row: 'pid_max + 1',
    write: '{pidMax+1}\n',
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  {
    row: '2^31',
    write: '2147483648\n',
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  {
    row: '2^32 (the patch truncated it to 0)',
    write: '4294967296\n',
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  {
    row: '2^32 + 1 (the patch looked up pid 1)',
    write: '4294967297\n',
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  {
    row: '2^64 + 1 (the patch wrapped it to 1)',
    write: '18446744073709551617\n',
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  {
    row: '4095 nines',
    write: '9'.repeat(4095),
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  // unregister
  {
    row: '"-pid" registered',
    write: '-{pid}',
    before: 'registered',
    plain: 'accepted',
    strict: 'accepted',
    after: [],
  },
  {
    row: '"-pid\\n" registered',
    write: '-{pid}\n',
    before: 'registered',
    plain: 'accepted',
    strict: 'accepted',
    after: [],
  },
  {
    row: '"-pidxyz" registered',
    write: '-{pid}xyz',
    before: 'registered',
    plain: 'accepted',
    strict: 'accepted',
    after: [],
  },
  {
    row: '"-pid" not registered',
    write: '-{pid}',
    before: 'empty',
    plain: 'accepted',
    strict: 'rejected',
    after: [],
  },
  {
    row: '"-other" while pid registered',
    write: '-{unused}',
    before: 'registered',
    plain: 'accepted',
    strict: 'rejected',
    after: ['{pid}'],
  },
  {
    row: '"-(2^32 + pid)": no alias of pid',
    write: '-4294967296',
    before: 'registered',
    plain: 'accepted',
    strict: 'rejected',
    after: ['{pid}'],
  },
];

describe.each([
  ['patch (default)', false],
  ['--strict', true],
])('processes write, %s', (_mode, strict) => {
  test.each(processesRows)('$row', ({ write, before, plain, strict: strictOutcome, after }) => {
    const { processes } = createPatchAttributes(relay, { strict });
    if (before === 'registered') expect(relay.registry.register(first.pid)).toBe('registered');
    expect(processes.store(fill(write))).toBe(strict ? strictOutcome : plain);
    expect(relay.registry.ids()).toEqual(after.map((id) => Number(fill(id))));
    expect(processes.show()).toBe(after.map((id) => `${fill(id)} `).join('') + '\n');
    expect(relay.registry.has(1)).toBe(false);
  });
});

describe('processes read', () => {
  let attributes: PatchAttributes;
  beforeEach(() => {
    attributes = createPatchAttributes(relay);
  });

  test('empty: a lone newline', () => {
    expect(attributes.processes.show()).toBe('\n');
  });

  test('newest first; re-registering keeps the order; re-adding after removal moves to front', () => {
    const { processes } = attributes;
    processes.store(`${first.pid}\n`);
    processes.store(`${second.pid}\n`);
    processes.store(`${threadId}\n`);
    expect(processes.show()).toBe(`${threadId} ${second.pid} ${first.pid} \n`);
    processes.store(`${first.pid}\n`);
    expect(processes.show()).toBe(`${threadId} ${second.pid} ${first.pid} \n`);
    processes.store(`-${second.pid}\n`);
    expect(processes.show()).toBe(`${threadId} ${first.pid} \n`);
    processes.store(`${second.pid}\n`);
    expect(processes.show()).toBe(`${second.pid} ${threadId} ${first.pid} \n`);
    expect(relay.registry.size).toBe(3);
  });

  test('a thread id and its process id are separate registrants', () => {
    const { processes } = attributes;
    processes.store(`${threaded.pid}`);
    processes.store(`${threadId}`);
    expect(processes.show()).toBe(`${threadId} ${threaded.pid} \n`);
    processes.store(`-${threaded.pid}`);
    expect(processes.show()).toBe(`${threadId} \n`);
  });
});

/** [write, taken, signal afterwards (starting from 35)] */
const signalRows: Array<[string, boolean, number]> = [
  ['40', true, 40],
  ['40\n', true, 40],
  ['-40', true, 40],
  ['-40\n', true, 40],
  ['40abc', true, 40],
  ['33', true, 33],
  ['34', true, 34],
  ['63\n', true, 63],
  ['32', false, 35],
  ['64', false, 35],
  ['9', false, 35],
  ['0', false, 35],
  ['-0', false, 35],
  ['', false, 35],
  ['abc', false, 35],
  [' 40', false, 35],
  ['+40', false, 35],
  ['--40', false, 35],
  ['4294967336', false, 35], // 2^32 + 40
  ['18446744073709551656', false, 35], // 2^64 + 40: the patch took 40
];

describe.each([
  ['patch (default)', false],
  ['--strict', true],
])('signal write, %s (starting from 35)', (_mode, strict) => {
  test.each(signalRows)('%j: taken %s, signal %d', (write, taken, result) => {
    const { signal } = createPatchAttributes(relay, { strict });
    expect(relay.setSignal(35)).toBe(true);
    expect(signal.store(write)).toBe(taken || !strict ? 'accepted' : 'rejected');
    expect(relay.signal).toBe(result);
    expect(signal.show()).toBe(`${result}\n`);
  });
});

describe('signal read', () => {
  test('"33\\n" at start, as the patch', () => {
    const defaultRelay = new Relay();
    try {
      expect(createPatchAttributes(defaultRelay).signal.show()).toBe('33\n');
    } finally {
      defaultRelay.close();
    }
  });

  test('the initial signal from the options', () => {
    expect(createPatchAttributes(relay).signal.show()).toBe('40\n');
  });

  test('an initial signal out of range is refused', () => {
    expect(() => new Relay({ signal: 64 })).toThrow(RangeError);
    expect(() => new Relay({ signal: 32 })).toThrow(RangeError);
  });
});

describe('logging', () => {
  test('registrations with the command name, unregistrations and signal changes at info', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer | string, _encoding, done) {
        lines.push(String(chunk).trimEnd());
        done();
      },
    });
    const logger = winston.createLogger({
      level: 'info',
      format: winston.format.printf(({ level, message }) => `${level}: ${String(message)}`),
      transports: [new winston.transports.Stream({ stream: sink })],
    });
    try {
      const { processes, signal } = createPatchAttributes(relay, { logger });
      processes.store(`${first.pid}\n`);
      processes.store(`${first.pid}\n`); // already: nothing to log
      processes.store(`-${first.pid}\n`);
      processes.store(`${threadId}\n`);
      signal.store('41\n');
      signal.store('41\n'); // unchanged: nothing to log
      signal.store('99\n'); // ignored
      await waitFor('log lines', () => lines.length >= 4, 2000);
      await new Promise((resolve) => setImmediate(resolve));
      expect(lines).toEqual([
        `info: pid ${first.pid} (rt_consumer) registered`,
        `info: pid ${first.pid} (rt_consumer) unregistered (signals sent 0, lost 0)`,
        `info: pid ${threadId} (rt_consumer) registered`,
        `info: signal changed from 40 to 41`,
      ]);
    } finally {
      logger.close();
    }
  });

  test('a registration the registry cannot make fails with its errno and logs, never throws', async () => {
    const errors: string[] = [];
    const logger = winston.createLogger({
      transports: [
        new winston.transports.Stream({
          stream: new Writable({
            write(chunk: Buffer | string, _encoding, done) {
              errors.push(String(chunk));
              done();
            },
          }),
        }),
      ],
    });
    const { processes } = createPatchAttributes(relay, { logger });
    // The kernel's answers when the daemon is out of descriptors or memory (the real EMFILE is
    // provoked through the daemon in test/daemon/hardening.test.ts).
    const failWith = (errno: number): void => {
      relay.registry.register = () => {
        throw syscallError('pidfd_open', errno);
      };
    };
    try {
      failWith(24);
      expect(processes.store(`${first.pid}\n`)).toEqual({ errno: 'EMFILE' });
      failWith(12);
      expect(processes.store(`${first.pid}\n`)).toEqual({ errno: 'ENOMEM' });
      failWith(1);
      expect(processes.store(`${first.pid}\n`)).toEqual({ errno: 'EIO' });
      await waitFor('the error lines', () => errors.length >= 3, 2000);
      expect(errors[0]).toMatch(
        new RegExp(`registering pid ${first.pid} failed: .*EMFILE.*LimitNOFILE`),
      );
      expect(relay.registry.size).toBe(0);
    } finally {
      logger.close();
    }
  });

  test('once the daemon shuts down, writes to either file fail with ESHUTDOWN', () => {
    let shuttingDown = false;
    const { processes, signal } = createPatchAttributes(relay, {
      isShuttingDown: () => shuttingDown,
    });
    expect(processes.store(`${first.pid}\n`)).toBe('accepted');
    shuttingDown = true;
    expect(processes.store(`${second.pid}\n`)).toEqual({ errno: 'ESHUTDOWN' });
    expect(processes.store(`-${first.pid}\n`)).toEqual({ errno: 'ESHUTDOWN' });
    expect(signal.store('41\n')).toEqual({ errno: 'ESHUTDOWN' });
    expect(relay.registry.ids()).toEqual([first.pid]);
    expect(relay.signal).toBe(TEST_SIGNAL);
    // A registry already closed (the relay went first) answers the same.
    const closed = new Relay({ signal: TEST_SIGNAL });
    closed.close();
    expect(createPatchAttributes(closed).processes.store(`${first.pid}\n`)).toEqual({
      errno: 'ESHUTDOWN',
    });
  });

  test('with the caller known, the log line names who wrote', async () => {
    const lines: string[] = [];
    const logger = winston.createLogger({
      format: winston.format.printf(({ message }) => String(message)),
      transports: [
        new winston.transports.Stream({
          stream: new Writable({
            write(chunk: Buffer | string, _encoding, done) {
              lines.push(String(chunk).trimEnd());
              done();
            },
          }),
        }),
      ],
    });
    const { processes } = createPatchAttributes(relay, { logger });
    const caller = { pid: second.pid, uid: 0, gid: 0 };
    try {
      processes.store(`${first.pid}\n`, caller);
      processes.store(`-${first.pid}\n`, caller);
      await waitFor('log lines', () => lines.length >= 2, 2000);
      expect(lines).toEqual([
        `pid ${first.pid} (rt_consumer) registered by pid ${second.pid} (rt_consumer), uid 0`,
        `pid ${first.pid} (rt_consumer) unregistered by pid ${second.pid} (rt_consumer), uid 0 (signals sent 0, lost 0)`,
      ]);
    } finally {
      logger.close();
    }
  });

  test('the daemon itself is never registered: its pid and its threads are refused', () => {
    const { processes } = createPatchAttributes(relay);
    const strictProcesses = createPatchAttributes(relay, { strict: true }).processes;
    for (const tid of fs.readdirSync('/proc/self/task').map(Number)) {
      expect(processes.store(`${tid}\n`)).toBe('accepted');
      expect(strictProcesses.store(`${tid}\n`)).toBe('rejected');
    }
    expect(relay.registry.size).toBe(0);
  });
});
