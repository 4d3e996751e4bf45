/**
 * src/netlink: a typed, lossless client of the Linux proc connector. Knows the kernel's wire
 * format and nothing of FUSE or the relay.
 */
export {
  ProcConnector,
  DEFAULT_ACK_TIMEOUT_MS,
  DEFAULT_RECEIVE_BUFFER_BYTES,
  DEFAULT_SELF_TEST_TIMEOUT_MS,
  type LossNotice,
  type ProcConnectorCounters,
  type ProcConnectorEvents,
  type ProcConnectorOptions,
  type SubscriptionMode,
} from './procConnector';
export {
  ProcConnectorError,
  describeProcConnectorError,
  toProcConnectorError,
  type ProcConnectorErrorCode,
} from './errors';
export * from './events';
export { parseDatagram, type CnProcSink } from './cnProcStructs';
