/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: false }] },
  // Kernel and FUSE tests share one machine's fork stream and mounts: run files one at a time so
  // a thread storm in one file does not become lost events in another.
  maxWorkers: 1,
  testTimeout: 60000,
};
