#!/bin/sh
# Installs the servers the cluster tests start on free ports in temp dirs: Debian's redis-server
# (tests/redis_server.py) and postgresql. Does nothing for a server already there. Without root
# or apt-get it only says so and exits 0: outside CI those tests then skip; under CI (CI=true)
# they fail, so a missing server is never a silent skip there.
#
#   deploy/install_services.sh          (make test calls it)
set -eu

missing=""
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing="$missing redis-server"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install_services.sh: missing$missing and cannot install (needs root and apt-get);" \
         "the tests that need them skip (and fail under CI)." >&2
    exit 0
fi

echo "install_services.sh: installing$missing for the cluster tests" >&2
export DEBIAN_FRONTEND=noninteractive
# The packages' own services are not wanted: the tests start their servers themselves.
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
    echo "install_services.sh: installing$missing failed; the tests that need them will fail under CI." >&2
fi
