#!/usr/bin/env bash
# Debian packages the test suite needs that a fresh Debian 12 machine may lack:
#   mariadb-server  - mariadbd for `triggerd dev` and the integration tests
#   docker-compose  - `docker-compose config`, the compose parser of test_deploy_files.py
#   systemd         - systemd-analyze, to verify config/triggerd.service
#   prometheus      - promtool, to check config/prometheus/alerts.yml (the server it also
#                     ships is never started: see policy-rc.d below)
#   python3-venv    - `python3 -m venv`, for the .venv the Makefile builds
#   chromium        - the real browser the console's tests drive (tests/e2e/test_console.py)
# Idempotent: when everything is present it touches neither apt nor the network.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]] || [[ -x "/usr/bin/$1" ]]; }

missing=()
have mariadbd || have mysqld || missing+=(mariadb-server)
have docker-compose || missing+=(docker-compose)
have systemd-analyze || missing+=(systemd)
have chromium || missing+=(chromium)
have promtool || missing+=(prometheus)
# Debian's python3 ships venv/ensurepip separately; `make` creates .venv with them.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

if ((${#missing[@]} == 0)); then
    echo "install-system-deps: nothing to install"
    exit 0
fi

echo "install-system-deps: installing ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi

# Package scripts must not start services (mariadb-server would launch a server on
# port 3306): policy-rc.d answering 101 forbids it, for this install only.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 0755 "$policy"
    own_policy=true
fi
cleanup() {
    if [[ $own_policy == true ]]; then
        "${sudo[@]}" rm -f "$policy"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

have mariadbd || have mysqld || { echo "install-system-deps: mariadbd still missing" >&2; exit 1; }
for tool in docker-compose systemd-analyze chromium promtool; do
    have "$tool" || { echo "install-system-deps: $tool still missing" >&2; exit 1; }
done
echo "install-system-deps: done"
