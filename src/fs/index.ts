/**
 * The FUSE tree: a generic sysfs-like filesystem of show()/store() attributes, served over the
 * kernel's FUSE protocol by TypeScript (no libfuse). Knows FUSE and nothing of netlink or the relay.
 */
export type { Attribute, Caller, StoreErrno, StoreFailure, StoreOutcome } from './attribute';
export {
  AdoptRefused,
  AttributeFs,
  DEFAULT_FILE_MODE,
  DEFAULT_REQUEST_TIMEOUT_SECONDS,
  FUSE_MAX_WRITE,
  MAX_HELD_RENDERING_BYTES,
  SHOW_MAX_BYTES,
  STORE_MAX_BYTES,
  SYSFS_PAGE_SIZE,
  type AttributeFsEvents,
  type AttributeFsNotice,
  type AttributeFsOptions,
} from './attributeFs';
export {
  abortConnection,
  parseHandoverName,
  type FuseHandover,
  type HandoverDescription,
} from './handover';
export { FsMountError, type FsMountErrorCode } from './errors';
export {
  checkFuseDevice,
  checkRoot,
  checkThreadPool,
  prepareMountpoint,
  threadPoolSize,
  type MountpointNotice,
} from './preflight';
export type { FuseProtocolInfo } from './fuseSession';
