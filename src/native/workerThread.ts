/**
 * How relayfork starts its worker thread (the proc connector's receive loop; the FUSE reader has
 * none, see src/fs/fuseReader.ts). Production always runs the compiled `.js` module beside the
 * caller; the test suite, which runs the TypeScript sources, installs a factory of its own
 * (test/support/tsWorker.ts, a jest setup file) so that workers run the sources under test, never
 * a stale dist/.
 */
import { Worker } from 'node:worker_threads';

/** Starts a worker for `entry`, a module path without its extension. */
export type WorkerFactory = (entry: string, workerData: unknown) => Worker;

const compiledWorker: WorkerFactory = (entry, workerData) =>
  new Worker(`${entry}.js`, { workerData });

let factory: WorkerFactory = compiledWorker;

/** Start the worker module `entry` (absolute path, no extension) with `workerData`. */
export function startWorker(entry: string, workerData: unknown): Worker {
  return factory(entry, workerData);
}

/** Internal: replace how workers start (tests); undefined restores the compiled default. */
export function setWorkerFactory(next: WorkerFactory | undefined): void {
  factory = next ?? compiledWorker;
}
