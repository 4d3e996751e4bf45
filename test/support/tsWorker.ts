/**
 * jest setup file: workers run the TypeScript sources under test. Node cannot run .ts in a
 * worker, so the worker evaluates a small script that transpiles each .ts it requires (without
 * type checking: tsc does that) and then requires the entry.
 */
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { setWorkerFactory } from '../../src/native/workerThread';

const REGISTER_TS = path.join(__dirname, '..', 'fixtures', 'register-ts.cjs');

const TS_WORKER_SCRIPT = `
'use strict';
const { workerData } = require('node:worker_threads');
require(workerData.__registerTs);
require(workerData.__entry);
`;

setWorkerFactory((entry, workerData) => {
  const data = { ...(workerData as object), __registerTs: REGISTER_TS, __entry: `${entry}.ts` };
  return new Worker(TS_WORKER_SCRIPT, { eval: true, workerData: data });
});
