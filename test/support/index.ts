/**
 * The test-support module, for every test folder and bench/: one waitFor, one child-process
 * helper, one fixture compiler, one temp-dir and mount helper. Folder-specific helpers (FUSE
 * fixtures, the daemon harness, the RT-signal consumer) build on these.
 */
import { stopAllChildren } from './children';
import { removeAllTempDirs } from './tempDir';

export { waitFor, waitForStill, sleep, DEFAULT_TIMEOUT_MS, type Probe } from './waitFor';
export { forksSinceBoot, schedulerRuns } from './machine';
export {
  Child,
  spawnChild,
  stopAllChildren,
  run,
  finished,
  execFileAsync,
  type Exit,
  type Ran,
  type RunOptions,
  type SpawnOptions,
} from './children';
export { compileFixture, runForker } from './fixtures';
export { TempDir, removeAllTempDirs } from './tempDir';
export { isMounted, mountTypeAt, mountPointsBelow, detachMountsBelow } from './mounts';
export { ROOT, CLI, REGISTER_TS, nodeEvalArgs, requireRoot, requireBuild } from './paths';
export { AS_NOBODY } from './unprivileged';
export { parseSignalLine, parseSignals, type ReceivedSignal } from './rtConsumer';

/**
 * What a test file's afterAll owes: end every child still running (each with its cleanup signal:
 * SIGTERM for a daemon, so it unmounts), then remove every temp dir, detaching what is left
 * mounted in it.
 */
export async function cleanupAll(): Promise<void> {
  await stopAllChildren();
  await removeAllTempDirs();
}
