/**
 * The deployment tests (test/deploy): the systemd unit (systemd-analyze verify, the sd_notify
 * protocol against a real datagram socket, a real boot under systemd-nspawn) and the Docker image
 * (the host/container end-to-end). They need root, systemd-container and a Docker engine (brought
 * up with ../shared/tools/*.sh), so the host suite (jest.config.js) leaves them out.
 *   npm run test:deploy    the systemd tests
 *   npm run test:docker    the host suite inside a privileged container, then the Docker tests
 */
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  roots: ['<rootDir>/test/deploy'],
  testPathIgnorePatterns: ['/node_modules/'],
  // Image builds and container boots take minutes, not seconds.
  testTimeout: 600000,
};
