/**
 * The `stats` file: what the daemon has done, for tools (one `name value` per line, like
 * /proc/vmstat). The names are stable and documented in README; new names may be added at the
 * end, none is renamed or removed. `processes` and `signal` stay byte-exact as the patch had them:
 * everything else goes here.
 */
import type { Attribute, StoreOutcome } from '../fs/attribute';
import type { DeliveryCounters } from './registry';

/** A registrant as the stats file lists it. */
export interface RegistrantStats {
  id: number;
  counters: Readonly<DeliveryCounters>;
}

/** The daemon-wide counters, in file order. */
export interface DaemonStats {
  uptime_seconds: number;
  forks_seen_process: number;
  forks_seen_thread: number;
  forks_relayed: number;
  signals_sent: number;
  /** EAGAIN: a registrant's queue (its uid's RLIMIT_SIGPENDING) was full. */
  signals_lost_queue_full: number;
  signals_failed: number;
  registrants: number;
  registrants_ever: number;
  registrants_pruned_exited: number;
  registrants_pruned_gone: number;
  netlink_overruns: number;
  events_dropped: number;
  sequence_gaps: number;
  forks_recovered: number;
  forks_unrecoverable: number;
  state_file_writes: number;
  /** Times the receive worker fell behind the kernel and raised its priority to catch up. */
  catch_ups: number;
}

/** The names in file order (the order of DaemonStats). */
export const STATS_NAMES: readonly (keyof DaemonStats)[] = [
  'uptime_seconds',
  'forks_seen_process',
  'forks_seen_thread',
  'forks_relayed',
  'signals_sent',
  'signals_lost_queue_full',
  'signals_failed',
  'registrants',
  'registrants_ever',
  'registrants_pruned_exited',
  'registrants_pruned_gone',
  'netlink_overruns',
  'events_dropped',
  'sequence_gaps',
  'forks_recovered',
  'forks_unrecoverable',
  'state_file_writes',
  'catch_ups',
];

/**
 * The file's text: the daemon-wide counters, then per registrant (newest first, as `processes`
 * lists them) `registrant.<id>.signals_sent`, `.signals_lost` (EAGAIN) and `.signals_failed`.
 */
export function renderStats(
  stats: DaemonStats,
  registrantsNewestFirst: readonly RegistrantStats[],
): string {
  let text = '';
  for (const name of STATS_NAMES) text += `${name} ${stats[name]}\n`;
  for (const r of registrantsNewestFirst) {
    const c = r.counters;
    text += `registrant.${r.id}.signals_sent ${c.sent}\n`;
    text += `registrant.${r.id}.signals_lost ${c.lost}\n`;
    text += `registrant.${r.id}.signals_failed ${c.failed}\n`;
  }
  return text;
}

/** One line for the log (at shutdown): the daemon-wide counters. */
export function statsLine(stats: DaemonStats): string {
  return STATS_NAMES.map((name) => `${name}=${stats[name]}`).join(' ');
}

/** The read-only `stats` attribute; a write fails EACCES, root's included. */
export function createStatsAttribute(
  read: () => DaemonStats,
  registrantsNewestFirst: () => readonly RegistrantStats[],
): Attribute {
  return {
    mode: 0o444,
    show: () => renderStats(read(), registrantsNewestFirst()),
    store: (): StoreOutcome => ({ errno: 'EACCES' }),
  };
}
