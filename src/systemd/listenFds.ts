/**
 * sd_listen_fds_with_names(3) without libsystemd: the fds systemd passed to this process at
 * start, from its fd store (FDSTORE=1, ./notify.ts) or socket units.
 *
 * The protocol (systemd 252, src/libsystemd/sd-daemon/sd-daemon.c): the fds are 3 ..
 * 3 + LISTEN_FDS - 1; LISTEN_PID names the process they are meant for (a child that inherited
 * the environment must not take them); LISTEN_FDNAMES holds their names, ':'-separated, in the
 * same order. As sd_listen_fds(unset_environment = true) does, the variables are removed once
 * read and every fd is made close-on-exec, so nothing the daemon starts inherits them.
 */
import { setCloseOnExec } from '../native/libc';

/** SD_LISTEN_FDS_START: the first passed fd. */
export const LISTEN_FDS_START = 3;

export interface ListenedFd {
  fd: number;
  /** Its FDNAME, or "unknown" when systemd gave none (systemd's own default). */
  name: string;
}

/**
 * Take the fds passed by systemd. Returns [] when there are none or they are meant for another
 * process; a malformed environment is reported as the reason instead of throwing. `env` is
 * changed (the variables are removed) only when it is process.env's own or given.
 */
export function takeListenFds(
  env: NodeJS.ProcessEnv = process.env,
  pid = process.pid,
): { fds: ListenedFd[]; problem?: string } {
  const pidText = env.LISTEN_PID;
  const countText = env.LISTEN_FDS;
  const namesText = env.LISTEN_FDNAMES;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (pidText === undefined || countText === undefined) return { fds: [] };
  if (!/^\d+$/.test(pidText) || Number(pidText) !== pid) return { fds: [] };
  if (!/^\d+$/.test(countText)) {
    return { fds: [], problem: `LISTEN_FDS=${countText} is not a number: ignored` };
  }
  const count = Number(countText);
  const names = namesText === undefined || namesText === '' ? [] : namesText.split(':');
  const fds: ListenedFd[] = [];
  for (let i = 0; i < count; i++) {
    const fd = LISTEN_FDS_START + i;
    try {
      setCloseOnExec(fd);
    } catch (err) {
      return { fds, problem: `LISTEN_FDS=${count}, but fd ${fd} is not open (${String(err)})` };
    }
    fds.push({ fd, name: names[i] ?? 'unknown' });
  }
  return { fds };
}
