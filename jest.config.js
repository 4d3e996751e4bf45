/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  // test/deploy needs Docker and systemd-nspawn and runs the host suite inside a container itself:
  // it has its own config (jest.deploy.config.js, npm run test:docker / test:deploy).
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/deploy/'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: false }] },
  // Kernel and FUSE tests share one machine's fork stream and mounts: run files one at a time so
  // a thread storm in one file does not become lost events in another.
  maxWorkers: 1,
  testTimeout: 60000,
  // Workers run the TypeScript sources under test (src/native/workerThread.ts).
  setupFiles: ['<rootDir>/test/support/tsWorker.ts'],
};
