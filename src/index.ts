/**
 * The relayfork package entry: the proc connector library (src/netlink) and its types.
 *
 *   import { ProcConnector } from 'relayfork';
 */
export * from './netlink';
