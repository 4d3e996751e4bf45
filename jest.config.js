/**
 * Two jest projects (`npm test` runs both):
 * - unit: no root, no kernel: parsers, the patch's rules, protocol encoders, formats. Runs
 *   anywhere (`npm run test:unit`).
 * - system: root and the real kernel: FUSE mounts, the proc connector, pidfds, the daemon
 *   (`npm run test:system`). It fails loudly, never skips, where those are missing.
 * test/deploy needs Docker and systemd-nspawn and runs the host suite inside a container itself:
 * it has its own config (jest.deploy.config.js, npm run test:docker / test:deploy).
 */
const UNIT = [
  '<rootDir>/test/log.test.ts',
  '<rootDir>/test/netlink/cnProcStructs.test.ts',
  '<rootDir>/test/netlink/housekeepingTick.test.ts',
  '<rootDir>/test/netlink/catchUpPriority.test.ts',
  '<rootDir>/test/netlink/userNamespace.test.ts',
  '<rootDir>/test/bench/goals.test.ts',
  '<rootDir>/test/relay/patchRules.test.ts',
  '<rootDir>/test/relay/stats.test.ts',
  '<rootDir>/test/fs/mountInfo.test.ts',
  '<rootDir>/test/fs/threadPool.test.ts',
  '<rootDir>/test/kubernetes/daemonset.test.ts',
  '<rootDir>/test/systemd/installService.test.ts',
  '<rootDir>/test/systemd/fdStore.test.ts',
  '<rootDir>/test/support/support.test.ts',
];

const common = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: false }] },
  // Workers run the TypeScript sources under test (src/native/workerThread.ts).
  setupFiles: ['<rootDir>/test/support/tsWorker.ts'],
};

/** @type {import('jest').Config} */
module.exports = {
  projects: [
    { ...common, displayName: 'unit', testMatch: UNIT },
    {
      ...common,
      displayName: 'system',
      testMatch: ['<rootDir>/test/**/*.test.ts'],
      testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/deploy/', ...UNIT],
    },
  ],
  // Kernel and FUSE tests share one machine's fork stream and mounts: run files one at a time so
  // a thread storm in one file does not become lost events in another.
  maxWorkers: 1,
  testTimeout: 60000,
};
