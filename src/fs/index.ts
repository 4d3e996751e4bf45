/**
 * The FUSE tree: a generic sysfs-like filesystem of show()/store() attributes on fuse-native.
 * Knows FUSE and nothing of netlink or the relay.
 */
export type { Attribute, Caller, StoreErrno, StoreFailure, StoreOutcome } from './attribute';
export {
  AttributeFs,
  FUSE_MAX_WRITE,
  FUSE_MOUNT_OPTIONS,
  SHOW_MAX_BYTES,
  STORE_MAX_BYTES,
  SYSFS_PAGE_SIZE,
  type AttributeFsEvents,
  type AttributeFsNotice,
  type AttributeFsOptions,
} from './attributeFs';
export { FsMountError, type FsMountErrorCode } from './errors';
export { checkFuseDevice, checkRoot, prepareMountpoint, type MountpointNotice } from './preflight';
