# A Node 20 base for docker/Dockerfile where no registry serves node:20-bookworm-slim: the host's
# own node binary and npm on top of local/bookworm:base (Debian 12 minbase from
# ../shared/tools/docker-env.sh). node needs only libc, libstdc++ and libgcc_s, all in minbase.
# Built by docker/build.sh from a context holding `node` and `npm/` (the host's
# /usr/lib/node_modules/npm).
ARG BASE_IMAGE=local/bookworm:base
FROM ${BASE_IMAGE}
COPY node /usr/bin/node
COPY npm /usr/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/bin/npx \
 && node --version && npm --version
