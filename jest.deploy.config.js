/**
 * The deployment tests (test/deploy): the systemd unit (systemd-analyze verify, the sd_notify
 * protocol against a real datagram socket, a real boot under systemd-nspawn) and the Docker image
 * (the host/container end-to-end). They need root, systemd-container and a Docker engine (brought
 * up with ../shared/tools/*.sh), so the host suite (jest.config.js) leaves them out.
 *   npm run test:deploy    the systemd tests
 *   npm run test:docker    the host suite inside a privileged container, then the Docker tests
 */

/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test/deploy'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: false }] },
  setupFiles: ['<rootDir>/test/support/tsWorker.ts'],
  maxWorkers: 1,
  // Image builds and container boots take minutes, not seconds.
  testTimeout: 600000,
};
