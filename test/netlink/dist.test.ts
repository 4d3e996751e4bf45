/**
 * The compiled package: from dist/, the receive worker is the receiveWorker.js beside
 * procConnector.js (the other tests run the .ts sources, whose worker test/support/tsWorker.ts starts).
 * `npm test` builds before jest; run `npm run build` first when running jest alone.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { ROOT as REPO, run } from '../support';

const SOURCES = [
  'procConnector',
  'receiveWorker',
  'workerHost',
  'subscription',
  'socket',
  'cnProcStructs',
  'errors',
];

test('dist/ is built from the current sources', async () => {
  for (const name of SOURCES) {
    const src = await stat(path.join(REPO, 'src/netlink', `${name}.ts`));
    const js = await stat(path.join(REPO, 'dist/netlink', `${name}.js`)).catch(() => {
      throw new Error(`dist/netlink/${name}.js is missing: run npm run build`);
    });
    if (js.mtimeMs < src.mtimeMs) {
      throw new Error(`dist/netlink/${name}.js is older than its source: run npm run build`);
    }
  }
});

test('the compiled connector opens, passes the self-test and closes', async () => {
  const dist = JSON.stringify(path.join(REPO, 'dist/netlink/index.js'));
  const ran = await run(process.execPath, [
    '-e',
    `const { ProcConnector } = require(${dist});
     (async () => {
       const connector = new ProcConnector({ events: ['fork', 'exit'] });
       await connector.open();
       await connector.selfTest();
       const subscription = connector.subscription;
       await connector.close();
       console.log(JSON.stringify({ subscription, forks: connector.counters.received.fork }));
     })().catch((err) => { console.error(err.message); process.exitCode = 1; });`,
  ]);
  expect(ran.stderr).toBe('');
  expect(ran.code).toBe(0);
  const result = JSON.parse(ran.stdout) as { subscription: string; forks: number };
  expect(result.subscription).toBe('filtered');
  expect(result.forks).toBeGreaterThanOrEqual(1); // at least the self-test's child
});
