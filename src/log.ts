/**
 * The daemon's logger (winston). One line per entry on stderr, so stdout stays free for
 * `relayfork watch` output and systemd's journal captures everything.
 *
 * Two formats:
 * - 'text': `<ISO time> <level>: <message>`, for a terminal or a file;
 * - 'journal': `<N><message>` with the sd-daemon priority prefix (sd-daemon(3): <3> error,
 *   <4> warning, <6> info, <7> debug) and no timestamp of its own (the journal stamps every
 *   line), so `journalctl -u relayfork -p warning` finds the warnings. Chosen by default when
 *   stderr is the journal stream systemd announced in $JOURNAL_STREAM.
 *
 * Messages carry text users control (a registrant's comm, a path): every control character is
 * escaped, so no entry can end early or forge another line. A log write that fails (stderr
 * closed: EPIPE) is dropped: logging must never stop the daemon.
 */
import fs from 'node:fs';
import winston from 'winston';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

export type LogFormat = 'text' | 'journal';
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'journal'];

/** sd-daemon(3) priorities (syslog's LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG). */
export const JOURNAL_PRIORITY: Readonly<Record<LogLevel, number>> = {
  error: 3,
  warn: 4,
  info: 6,
  debug: 7,
};

const CONTROL_CHARACTERS = /[\x00-\x1f\x7f]/g; // eslint-disable-line no-control-regex

/** `text` with every control character escaped (\n, \r, \t, else \xNN): always one line. */
export function escapeControlCharacters(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (ch) => {
    if (ch === '\n') return '\\n';
    if (ch === '\r') return '\\r';
    if (ch === '\t') return '\\t';
    return `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}

/**
 * 'journal' when stderr is the stream systemd connected to the journal: $JOURNAL_STREAM is
 * "<device>:<inode>" of that stream (systemd.exec(5)), checked against fd 2 so that a child that
 * merely inherited the variable does not prefix its terminal output.
 */
export function defaultLogFormat(env: NodeJS.ProcessEnv = process.env): LogFormat {
  const announced = env.JOURNAL_STREAM;
  if (announced === undefined || announced === '') return 'text';
  try {
    const st = fs.fstatSync(2);
    return announced === `${st.dev}:${st.ino}` ? 'journal' : 'text';
  } catch {
    return 'text';
  }
}

/** Formats one entry as a line (without its newline). */
export function formatLogLine(
  format: LogFormat,
  level: LogLevel,
  message: unknown,
  timestamp: string,
): string {
  const text = escapeControlCharacters(String(message));
  return format === 'journal'
    ? `<${JOURNAL_PRIORITY[level]}>${text}`
    : `${timestamp} ${level}: ${text}`;
}

let stderrErrorsSwallowed = false;

export function createLogger(
  level: LogLevel = 'info',
  format: LogFormat = defaultLogFormat(),
): winston.Logger {
  if (!stderrErrorsSwallowed) {
    // Without a listener, EPIPE on a closed stderr is an uncaught 'error' event: the daemon
    // would die of a log line and leave its mount stale.
    process.stderr.on('error', () => undefined);
    stderrErrorsSwallowed = true;
  }
  const logger = winston.createLogger({
    level,
    levels: { error: 0, warn: 1, info: 2, debug: 3 },
    format: winston.format.printf(({ level: lvl, message }) =>
      formatLogLine(format, lvl as LogLevel, message, new Date().toISOString()),
    ),
    transports: [
      new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] }),
    ],
  });
  logger.on('error', () => undefined);
  return logger;
}

export type Logger = winston.Logger;
