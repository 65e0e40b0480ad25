# nginx-lb: Debian's nginx (with the Lua module, for the reload-free endpoint mode) driven by `nginx-lb run` as pid 1.
#
#   docker build -t nginx-lb .
#   docker run -v /etc/csphere-services.json:/etc/csphere-services.json:ro -e HOST_IP=10.0.0.5 -e ETCD_PORT=2379 \
#     -p 80:80 -p 443:443 nginx-lb
#
# It runs as the unprivileged user nginx-lb (uid 10101): services.json (and any key or password file) must be
# readable by that uid, e.g. mode 0644, or 0640 with group 10101.
#
# Debian bookworm ships Node.js 18; nginx-lb needs 20, so the runtime takes the node binary from the official
# Node 20 image built on the same Debian release (same glibc).

FROM node:20-bookworm-slim AS build
# g++/make/python3 build the small native reaper (pid 1 reaps orphans); the headers come with the node image, so
# node-gyp needs no download.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ make python3 \
 && rm -rf /var/lib/apt/lists/*
ENV npm_config_nodedir=/usr/local
WORKDIR /src
COPY package.json package-lock.json binding.gyp tsconfig.json ./
COPY native ./native
COPY src ./src
RUN npm ci --no-audit --no-fund \
 && test -f build/Release/reaper.node \
 && npx tsc -p tsconfig.json \
 && npm prune --omit=dev --no-audit --no-fund

FROM debian:bookworm-slim
# nginx-lb runs its own nginx with the config it renders under the state dir; Debian's default site is not used.
# Nothing runs as root: nginx-lb, its nginx master and the workers run as the user nginx-lb (uid 10101; numeric in
# USER so Kubernetes' runAsNonRoot can check it). nginx switches workers to another user only when its master runs
# as root (with a `user` directive it otherwise ignores, whatever capabilities it holds), so the workers share this
# user. Ports 80/443: nginx carries CAP_NET_BIND_SERVICE as a file capability, and nothing else does (node has
# none). The container's capability set must keep NET_BIND_SERVICE (Docker's default; with --cap-drop ALL add
# --cap-add NET_BIND_SERVICE), or the kernel refuses to start nginx; no-new-privileges disables the file capability,
# which leaves ports below 1024 to net.ipv4.ip_unprivileged_port_start (0 in Docker's own networks since 20.10).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx libnginx-mod-http-lua lua-resty-core ca-certificates libcap2-bin \
 && setcap cap_net_bind_service=+ep /usr/sbin/nginx \
 && apt-get purge -y libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /etc/nginx/sites-enabled/default \
 && groupadd --system --gid 10101 nginx-lb \
 && useradd --system --uid 10101 --gid nginx-lb --home-dir /var/lib/nginx-lb --no-create-home \
      --shell /usr/sbin/nologin nginx-lb \
 && install -d -o nginx-lb -g nginx-lb -m 0700 /var/lib/nginx-lb
COPY --from=build /usr/local/bin/node /usr/local/bin/node
WORKDIR /opt/nginx-lb
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/build/Release/reaper.node ./build/Release/reaper.node
# Read at run time from the source tree (src/nginx/lua-source.ts), not compiled into dist/.
COPY src/nginx/lua ./src/nginx/lua
COPY bin ./bin

# Every flag of `nginx-lb run` is also an environment variable; these are the container defaults. HOST_IP and
# ETCD_PORT (the original image's contract) form the etcd URL when NGINX_LB_ETCD_ENDPOINTS is not set.
ENV NGINX_LB_SERVICES=/etc/csphere-services.json \
    NGINX_LB_STATE_DIR=/var/lib/nginx-lb \
    NGINX_LB_ETCD_PREFIX=/lb/backends \
    NODE_ENV=production
VOLUME /var/lib/nginx-lb
EXPOSE 80 443

# The state dir above is the volume's initial content, so a new volume belongs to nginx-lb. A volume made by an
# older, root-run image is root's: nginx-lb refuses a state dir owned by another user; hand it over once with
#   docker run --rm --user 0 --entrypoint chown -v <volume>:/var/lib/nginx-lb nginx-lb -R 10101:10101 /var/lib/nginx-lb
USER 10101:10101

# No init wrapper: nginx-lb is pid 1 on purpose (it handles SIGUSR2/SIGHUP/SIGTERM itself and reaps zombies).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/node", "/opt/nginx-lb/bin/nginx-lb.js", "run"]

# /readyz, as the README recommends for health checks: healthy while nginx serves a confirmed config, not merely while
# the controller lives (/healthz). The admin server listens on 127.0.0.1:9180 by default (--admin-listen) and answers
# /readyz without a token; the slim image has no curl, node's fetch does the probe.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/node", "-e", "fetch('http://127.0.0.1:9180/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
