/**
 * The log format: one line per entry whatever users put in it, and the journal's priorities.
 */
import fs from 'node:fs';
import {
  JOURNAL_PRIORITY,
  defaultLogFormat,
  escapeControlCharacters,
  formatLogLine,
} from '../src/log';

test('control characters are escaped, so an entry is always one line', () => {
  expect(escapeControlCharacters('x\nerror: forged')).toBe('x\\nerror: forged');
  expect(escapeControlCharacters('a\rb\tc\x00d\x1be\x7f')).toBe('a\\rb\\tc\\x00d\\x1be\\x7f');
  expect(escapeControlCharacters('pid 12 (bash) é')).toBe('pid 12 (bash) é');
  for (let code = 0; code < 0x80; code++) {
    expect(formatLogLine('text', 'info', String.fromCharCode(code), 'T')).not.toMatch(/[\n\r]/);
  }
});

test('journal lines carry the sd-daemon priority and no timestamp; text lines the reverse', () => {
  expect(JOURNAL_PRIORITY).toEqual({ error: 3, warn: 4, info: 6, debug: 7 });
  expect(formatLogLine('journal', 'error', 'boom', '2026-01-01T00:00:00Z')).toBe('<3>boom');
  expect(formatLogLine('journal', 'warn', 'lost\n3', 'T')).toBe('<4>lost\\n3');
  expect(formatLogLine('journal', 'info', 'ready', 'T')).toBe('<6>ready');
  expect(formatLogLine('journal', 'debug', 'x', 'T')).toBe('<7>x');
  expect(formatLogLine('text', 'warn', 'lost', '2026-01-01T00:00:00Z')).toBe(
    '2026-01-01T00:00:00Z warn: lost',
  );
});

test('the journal format is the default only when stderr is the stream JOURNAL_STREAM names', () => {
  const st = fs.fstatSync(2);
  expect(defaultLogFormat({ JOURNAL_STREAM: `${st.dev}:${st.ino}` })).toBe('journal');
  expect(defaultLogFormat({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` })).toBe('text');
  expect(defaultLogFormat({ JOURNAL_STREAM: '' })).toBe('text');
  expect(defaultLogFormat({})).toBe('text');
});
