/**
 * The daemon's logger (winston). One line per entry on stderr, so stdout stays free for
 * `relayfork watch` output and systemd's journal captures everything.
 */
import winston from 'winston';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

export function createLogger(level: LogLevel = 'info'): winston.Logger {
  return winston.createLogger({
    level,
    levels: { error: 0, warn: 1, info: 2, debug: 3 },
    format: winston.format.combine(
      winston.format.timestamp(),
      winston.format.printf(
        ({ timestamp, level: lvl, message }) => `${String(timestamp)} ${lvl}: ${String(message)}`,
      ),
    ),
    transports: [
      new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] }),
    ],
  });
}

export type Logger = winston.Logger;
