/**
 * `relayfork install-service`: writes systemd/relayfork.service (shipped in the package) into the
 * unit directory with an ExecStart that starts this very installation: the node binary running
 * now and the absolute path of this package's dist/cli.js. That works the same for a checkout, a
 * global npm install under any prefix, and a node that is not on systemd's search path (nvm).
 */
import fs from 'node:fs/promises';
import path from 'node:path';

export interface InstallServiceOptions {
  /**
   * The command line that starts the daemon, without --signal (which `signal` adds). Default:
   * `<process.execPath> <this package>/dist/cli.js`.
   */
  execStart?: string;
  /** Where to write relayfork.service. Default /etc/systemd/system. */
  unitDir?: string;
  /** The signal the daemon starts with (34..63; glibc reserves 32 and 33). Default 40. */
  signal?: number;
}

export const DEFAULT_UNIT_DIR = '/etc/systemd/system';
export const DEFAULT_SERVICE_SIGNAL = 40;
export const UNIT_NAME = 'relayfork.service';

/**
 * The directories systemd's system manager loads units from (systemd.unit(5), "System Unit Search
 * Path"), plus /lib/systemd/system, which Debian and others without a merged /usr still use.
 */
export const SYSTEMD_UNIT_DIRS: readonly string[] = [
  '/etc/systemd/system.control',
  '/run/systemd/system.control',
  '/run/systemd/transient',
  '/run/systemd/generator.early',
  '/etc/systemd/system',
  '/etc/systemd/system.attached',
  '/run/systemd/system',
  '/run/systemd/system.attached',
  '/run/systemd/generator',
  '/usr/local/lib/systemd/system',
  '/usr/lib/systemd/system',
  '/lib/systemd/system',
  '/run/systemd/generator.late',
];

async function realDir(dir: string): Promise<string> {
  return fs.realpath(dir).catch(() => path.resolve(dir));
}

/** Whether systemd (the system manager) reads units from `dir`, symbolic links resolved. */
export async function systemdReadsUnitDir(dir: string): Promise<boolean> {
  const target = await realDir(dir);
  for (const known of SYSTEMD_UNIT_DIRS) {
    if (path.resolve(dir) === known || target === (await realDir(known))) return true;
  }
  return false;
}

/** What `relayfork install-service` prints once it has written `unit`. */
export function installServiceMessage(unit: string, readBySystemd: boolean): string {
  if (readBySystemd) {
    return `wrote ${unit}\nnow run: systemctl daemon-reload && systemctl enable --now relayfork\n`;
  }
  return (
    `wrote ${unit}\n` +
    `systemd does not read ${path.dirname(unit)}: to use this unit, copy it to ${DEFAULT_UNIT_DIR} ` +
    `(or omit --unit-dir), then run systemctl daemon-reload && systemctl enable --now relayfork\n`
  );
}

/** The package root: this file is <root>/src/systemd/*.ts or <root>/dist/systemd/*.js. */
const PACKAGE_ROOT = path.resolve(__dirname, '..', '..');
export const UNIT_TEMPLATE_PATH = path.join(PACKAGE_ROOT, 'systemd', UNIT_NAME);

/**
 * A command line for ExecStart= (systemd.service(5), "Command lines"): each word in double quotes
 * if it holds whitespace, quotes, backslashes or ';'; '%' doubled everywhere (specifiers are
 * expanded in the whole line); '$' doubled in the arguments only, because environment variables
 * are substituted in the arguments but not in the executable's path.
 */
export function execCommandLine(words: readonly string[]): string {
  return words
    .map((word, i) => {
      let escaped = word.replace(/%/g, '%%');
      if (i > 0) escaped = escaped.replace(/\$/g, '$$$$');
      if (escaped !== '' && !/[\s"'\\;]/.test(escaped)) return escaped;
      return `"${escaped.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
    })
    .join(' ');
}

/** `<node> <package>/dist/cli.js` for the running installation; throws if it is not built. */
export async function defaultExecStart(): Promise<string> {
  const cli = path.join(PACKAGE_ROOT, 'dist', 'cli.js');
  try {
    await fs.access(cli);
  } catch {
    throw new Error(`${cli} does not exist: build relayfork first (npm ci, or npm run build).`);
  }
  return execCommandLine([process.execPath, cli]);
}

/** The shipped unit with its ExecStart= line replaced. */
export function renderUnit(template: string, execStart: string): string {
  const lines = template.split('\n');
  const index = lines.findIndex((line) => line.startsWith('ExecStart='));
  if (index < 0) throw new Error(`${UNIT_TEMPLATE_PATH} has no ExecStart= line.`);
  lines[index] = `ExecStart=${execStart}`;
  return lines.join('\n');
}

/**
 * Write relayfork.service into `unitDir` and return its path. Follow with
 * `systemctl daemon-reload && systemctl enable --now relayfork`.
 */
export async function installService(options: InstallServiceOptions = {}): Promise<string> {
  const signal = options.signal ?? DEFAULT_SERVICE_SIGNAL;
  if (!Number.isInteger(signal) || signal <= 33 || signal >= 64) {
    throw new Error(
      `--signal ${signal} cannot be used: choose 34..63 (the patch takes 32 < n < 64, and glibc reserves 32 and 33).`,
    );
  }
  const command = options.execStart ?? (await defaultExecStart());
  const unitDir = path.resolve(options.unitDir ?? DEFAULT_UNIT_DIR);
  const unit = renderUnit(
    await fs.readFile(UNIT_TEMPLATE_PATH, 'utf8'),
    `${command} --signal ${signal} --fd-store`,
  );

  await fs.mkdir(unitDir, { recursive: true });
  const target = path.join(unitDir, UNIT_NAME);
  // Write then rename, so systemd never reads a half-written unit.
  const temporary = `${target}.${process.pid}.tmp`;
  try {
    await fs.writeFile(temporary, unit, { mode: 0o644 });
    await fs.rename(temporary, target);
  } catch (err) {
    await fs.rm(temporary, { force: true });
    throw err;
  }
  return target;
}
