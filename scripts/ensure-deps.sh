#!/bin/sh
# Installs what nginx-lb's commands need and is missing: npm dependencies, then Debian's nginx (with the Lua module
# for reload-free endpoints), etcd, wrk, promtool (alert rules test) and chromium (dashboard test). Without root it
# says what to install instead. Idempotent and quiet. NGINX_LB_NEED_ETCD=0, NGINX_LB_NEED_PROMTOOL=0 and
# NGINX_LB_NEED_BROWSER=0 leave out what only the tests need; NGINX_LB_NEED_VALGRIND=1 (the benchmark suite) adds
# valgrind, whose callgrind counts nginx's instructions per request (figure 7b).
set -e
cd "$(dirname "$0")/.."

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "nginx-lb: installing npm dependencies" >&2
  # npm install, not npm ci: vite (under vitest) lists a Windows-only optional package this registry does not
  # serve, which npm ci counts as a lock mismatch; npm install honours the lock and skips it. --no-save: installing
  # never rewrites package-lock.json (a checkout stays clean whatever npm version or configuration runs this).
  npm install --no-save --no-audit --no-fund --loglevel=error >&2
fi

missing=""
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || missing="$missing libnginx-mod-http-lua"
[ -e /usr/share/lua/5.1/resty/core.lua ] || missing="$missing lua-resty-core"
if [ "${NGINX_LB_NEED_ETCD:-1}" = 1 ]; then
  command -v etcd >/dev/null 2>&1 || missing="$missing etcd-server"
  command -v etcdctl >/dev/null 2>&1 || missing="$missing etcd-client"
  command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
fi
# The deploy test checks the Prometheus alert rules with promtool (Debian's prometheus package).
if [ "${NGINX_LB_NEED_PROMTOOL:-1}" = 1 ]; then
  command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
fi
# The dashboard test drives a real headless Chromium (through playwright-core).
if [ "${NGINX_LB_NEED_BROWSER:-1}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
fi
if [ "${NGINX_LB_NEED_VALGRIND:-0}" = 1 ]; then
  command -v valgrind >/dev/null 2>&1 || missing="$missing valgrind"
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "nginx-lb: installing Debian packages:$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >&2
    # Debian starts nginx, etcd and prometheus as services on install; nginx-lb runs its own nginx, the tests their
    # own etcd, and only promtool of prometheus is used, so stop the packaged services.
    (systemctl disable --now nginx etcd prometheus 2>/dev/null || service nginx stop 2>/dev/null || true) >/dev/null 2>&1
  else
    echo "nginx-lb: missing Debian packages:$missing -- install them with: sudo apt-get install$missing" >&2
    exit 1
  fi
fi
