#!/usr/bin/env node
/**
 * relayfork's command line: wires the layers together and nothing else.
 *   relayfork [options]     the daemon (src/daemon.ts)
 *   relayfork watch         print live proc connector events (src/watch.ts)
 *   relayfork install-service   write the systemd unit (src/systemd/installService.ts)
 */
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from './log';
import { ignoreSignal, SIGUSR1 } from './native/libc';
import { DEFAULT_CATCH_UP_NICE, NICE_MAX, NICE_MIN } from './netlink/catchUpPriority';
import { DEFAULT_RECEIVE_BUFFER_BYTES } from './netlink/procConnector';
import { RECEIVE_SLOTS } from './netlink/receiveWorker';
import { DEFAULT_STATE_FILE } from './relay/stateFile';
import { DEFAULT_SERVICE_SIGNAL, DEFAULT_UNIT_DIR } from './systemd/installService';

function integerOption(min: number, max: number, what: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${what} must be a whole number.`);
    const n = Number(value);
    if (n < min || n > max)
      throw new InvalidArgumentError(`${what} must be from ${min} to ${max}.`);
    return n;
  };
}

/** --catch-up-nice: a nice value from -20 to 19, or off. */
function catchUpNiceOption(value: string): number | 'off' {
  if (value === 'off') return 'off';
  const n = Number(value);
  if (!/^-?\d+$/.test(value) || n < NICE_MIN || n > NICE_MAX) {
    throw new InvalidArgumentError(
      `--catch-up-nice must be a nice value from ${NICE_MIN} to ${NICE_MAX}, or off.`,
    );
  }
  return n;
}

export function buildProgram(): Command {
  const program = new Command();
  // Positional options: a subcommand's --signal is its own, not the daemon's.
  program
    .enablePositionalOptions()
    .name('relayfork')
    .description(
      'The 2005 Relay Fork Module in user space: every fork on the machine sends a real-time signal to each process registered in <mountpoint>/processes.',
    )
    .option('--mountpoint <dir>', 'where to mount the relayfork files', '/run/relayfork')
    .option(
      '--signal <n>',
      'initial signal, 33 to 63 as the patch took (32 < n < 64); 33, its default, is reserved by glibc: use 40',
      integerOption(33, 63, '--signal'),
      33,
    )
    .option('--strict', 'fail writes the patch would silently ignore with EINVAL', false)
    .option('--processes-only', 'relay only new processes, not new threads', false)
    .option(
      '--allow-self-register',
      'let every user register (and unregister) its own process or threads; signal stays root-only',
      false,
    )
    .addOption(
      new Option('--log-level <level>', 'log verbosity').choices(LOG_LEVELS).default('info'),
    )
    .addOption(
      new Option(
        '--log-format <format>',
        'text (with timestamps) or journal (sd-daemon priority prefixes); default: journal when stderr is the systemd journal',
      ).choices(LOG_FORMATS),
    )
    .option(
      '--receive-buffer <bytes>',
      `proc connector socket receive buffer (default ${DEFAULT_RECEIVE_BUFFER_BYTES})`,
      integerOption(65536, 2 ** 30, '--receive-buffer'),
    )
    .option(
      '--catch-up-nice <n>',
      `the receive worker's nice value while it is behind the kernel (${RECEIVE_SLOTS} forks queued), back to its own once caught up; off: never raised`,
      catchUpNiceOption,
      DEFAULT_CATCH_UP_NICE,
    )
    .option(
      '--state <file>',
      'where registrations and the signal are kept across restarts',
      DEFAULT_STATE_FILE,
    )
    .option('--no-state', 'keep no state: a restart starts with no registrants')
    .option(
      '--fd-store',
      "under systemd (FileDescriptorStoreMax=1): keep the FUSE connection in systemd's fd store, so a restart or crash keeps the mount",
      false,
    )
    .action(async (opts: DaemonCliOptions) => {
      const { runDaemon } = await import('./daemon');
      process.exitCode = await runDaemon({
        mountpoint: opts.mountpoint,
        signal: opts.signal,
        strict: opts.strict,
        processesOnly: opts.processesOnly,
        allowSelfRegister: opts.allowSelfRegister,
        logLevel: opts.logLevel,
        logFormat: opts.logFormat,
        receiveBufferBytes: opts.receiveBuffer,
        catchUpNice: opts.catchUpNice === 'off' ? undefined : opts.catchUpNice,
        stateFile: opts.state,
        fdStore: opts.fdStore,
      });
    });

  program
    .command('watch')
    .description('print live process events from the kernel, one line each (like forkstat)')
    .option(
      '--events <kinds>',
      'comma-separated kinds: fork,exec,uid,gid,sid,ptrace,comm,coredump,exit',
    )
    .option('--json', 'print one JSON object per line', false)
    .option(
      '--receive-buffer <bytes>',
      `socket receive buffer (default ${DEFAULT_RECEIVE_BUFFER_BYTES})`,
      integerOption(65536, 2 ** 30, '--receive-buffer'),
    )
    .action(async (opts: { events?: string; json: boolean; receiveBuffer?: number }) => {
      const { runWatch } = await import('./watch');
      process.exitCode = await runWatch({
        events: opts.events,
        json: opts.json,
        receiveBuffer: opts.receiveBuffer,
      });
    });

  program
    .command('install-service')
    .description(
      'write the systemd unit that starts this installation (node + this dist/cli.js); then: systemctl daemon-reload && systemctl enable --now relayfork',
    )
    .option('--unit-dir <dir>', 'where to write relayfork.service', DEFAULT_UNIT_DIR)
    .option(
      '--signal <n>',
      'the signal the service starts with, 34 to 63',
      integerOption(34, 63, '--signal'),
      DEFAULT_SERVICE_SIGNAL,
    )
    .action(async (opts: { unitDir: string; signal: number }) => {
      const { installService, installServiceMessage, systemdReadsUnitDir } =
        await import('./systemd/installService');
      const unit = await installService({ unitDir: opts.unitDir, signal: opts.signal });
      process.stdout.write(
        installServiceMessage(unit, await systemdReadsUnitDir(path.dirname(unit))),
      );
    });

  return program;
}

interface DaemonCliOptions {
  mountpoint: string;
  signal: number;
  strict: boolean;
  processesOnly: boolean;
  allowSelfRegister: boolean;
  logLevel: LogLevel;
  logFormat?: LogFormat;
  receiveBuffer?: number;
  catchUpNice: number | 'off';
  state: string | false;
  fdStore: boolean;
}

if (require.main === module) {
  // Before anything else, for every subcommand (all run as root): SIGUSR1 would open Node's
  // inspector to any local user (see closeInspectorSignal in daemon.ts).
  ignoreSignal(SIGUSR1);
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      process.stderr.write(`relayfork: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    });
}
