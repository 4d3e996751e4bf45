/**
 * The patch's text rules (issue 3 §4) on the pure functions: rfd_strtoi, rfd_proclist_show's
 * PAGE_SIZE rule, rfd_signal_show and rfd_signal_store's range.
 */
import {
  isAcceptedSignal,
  isUnregisterRequest,
  parsePatchNumber,
  PATCH_NUMBER_TOO_LARGE,
  renderProcessList,
  renderSignal,
} from '../../src/relay/patchRules';

describe('parsePatchNumber (rfd_strtoi)', () => {
  test.each([
    ['123\n', 123],
    ['123abc', 123],
    [' 123', 0],
    ['+5', 0],
    ['-0', 0],
    ['', 0],
    ['0', 0],
    ['-', 0],
    ['-123', 123],
    ['-123\n', 123],
    ['--123', 0],
    ['-+123', 0],
    ['12 34', 12],
    ['0042', 42],
    ['7\u00005', 7],
    ['abc', 0],
    ['\n', 0],
    ['1e3', 1],
    ['0x10', 0],
    ['4194304', 4194304],
    ['999999999999999', 999999999999999],
  ])('%j -> %d', (text, expected) => {
    expect(parsePatchNumber(text)).toBe(expected);
  });

  test.each([
    ['4294967296'], // 2^32: the patch truncated it to int 0
    ['4294967297'], // 2^32 + 1: the patch looked up pid 1
  ])('%s stays exact, far above any pid_max', (text) => {
    expect(parsePatchNumber(text)).toBe(Number(text));
  });

  test.each([
    ['18446744073709551617'], // 2^64 + 1: the patch's unsigned long wrapped to 1
    ['18446744073709551656'], // 2^64 + 40: the patch set signal 40
    ['-18446744073709551617'],
    ['9'.repeat(4095)],
    [`${'1'.repeat(30)}\n`],
  ])('%s saturates: never aliases a small number', (text) => {
    const n = parsePatchNumber(text);
    expect(n).toBe(PATCH_NUMBER_TOO_LARGE);
    expect(n).toBeGreaterThan(4194304);
    expect(isAcceptedSignal(n)).toBe(false);
  });
});

describe('isUnregisterRequest', () => {
  test.each([
    ['-123', true],
    ['-0', true],
    ['--1', true],
    ['123', false],
    [' -123', false],
    ['', false],
  ])('%j -> %s', (text, expected) => {
    expect(isUnregisterRequest(text)).toBe(expected);
  });
});

describe('renderProcessList (rfd_proclist_show)', () => {
  test('ids newest first, each followed by one space, then a newline', () => {
    expect(renderProcessList([456, 123])).toBe('456 123 \n');
  });

  test('empty list is a lone newline', () => {
    expect(renderProcessList([])).toBe('\n');
  });

  test('one-digit ids: the last id fits when chars + 2 < 4095, text is 4095 bytes', () => {
    const ids = new Array<number>(3000).fill(7);
    const text = renderProcessList(ids);
    // 2047 ids * 2 chars = 4094 (4092 + 2 = 4094 < 4095 admits the 2047th; 4094 + 2 does not)
    expect(text.length).toBe(4095);
    expect(text.split(' ').length - 1).toBe(2047);
    expect(text.endsWith('7 \n')).toBe(true);
  });

  test('an id that would reach exactly 4095 chars is refused (strict <)', () => {
    // 1023 three-digit ids = 4092 chars; "10 " would make 4095: not < 4095, so refused
    const ids = [...new Array<number>(1023).fill(100), 10];
    const text = renderProcessList(ids);
    expect(text.length).toBe(4093);
    expect(text.endsWith('100 \n')).toBe(true);
  });

  test('an id that reaches 4094 chars is admitted', () => {
    // 4092 + "1 " = 4094 < 4095
    const text = renderProcessList([...new Array<number>(1023).fill(100), 1]);
    expect(text.length).toBe(4095);
    expect(text.endsWith('100 1 \n')).toBe(true);
  });

  test('the first id that does not fit ends the list (the patch breaks out of the loop)', () => {
    const text = renderProcessList([...new Array<number>(1023).fill(100), 10, 1]);
    expect(text.endsWith('100 \n')).toBe(true);
    expect(text.includes(' 1 ')).toBe(false);
  });

  test('seven-digit pids: 511 of them fit', () => {
    const ids = Array.from({ length: 600 }, (_, i) => 4000000 + i);
    const text = renderProcessList(ids);
    expect(text.split(' ').length - 1).toBe(511);
    expect(text.length).toBe(511 * 8 + 1);
    expect(text.startsWith('4000000 4000001 ')).toBe(true);
  });
});

describe('renderSignal (rfd_signal_show)', () => {
  test.each([
    [33, '33\n'],
    [40, '40\n'],
    [63, '63\n'],
  ])('%d -> %j', (n, text) => {
    expect(renderSignal(n)).toBe(text);
  });
});

describe('isAcceptedSignal (rfd_signal_store: SIGRTMIN < n < SIGRTMAX)', () => {
  test.each([
    [0, false],
    [9, false],
    [31, false],
    [32, false],
    [33, true],
    [40, true],
    [63, true],
    [64, false],
    [65, false],
    [PATCH_NUMBER_TOO_LARGE, false],
  ])('%d -> %s', (n, expected) => {
    expect(isAcceptedSignal(n)).toBe(expected);
  });
});
