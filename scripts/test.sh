#!/usr/bin/env bash
# The whole test suite (README's test command; .ci/run calls it too).
# The tests start their own throwaway PostgreSQL cluster from the machine's PostgreSQL
# server binaries; this installs them first when they are missing (Debian/Ubuntu, root).
set -euo pipefail
cd "$(dirname "$0")/.."

have_pg() {
  command -v initdb >/dev/null 2>&1 && return 0
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if ! have_pg; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: PostgreSQL server binaries missing; installing them with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "test.sh: PostgreSQL server binaries (initdb, postgres) are missing; install them, e.g. 'sudo apt-get install postgresql'" >&2
    exit 1
  fi
fi

# The replica tests run two servers behind a real PgBouncer in transaction pooling mode.
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing pgbouncer for the replica tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    # Debian starts the packaged service; the tests run their own.
    (service pgbouncer stop || systemctl stop pgbouncer || true) >/dev/null 2>&1
  else
    echo "test.sh: the replica tests need PgBouncer: 'sudo apt-get install pgbouncer'" >&2
    exit 1
  fi
fi

# The TLS tests make their certificates with OpenSSL's command line.
if ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
  else
    echo "test.sh: the TLS tests need openssl: 'sudo apt-get install openssl'" >&2
    exit 1
  fi
fi

# The audit WORM-copy tests run moto's S3 server (with Object Lock) as the S3 endpoint,
# from a virtualenv under target/ that is made once and reused by later runs.
MOTO_VERSION=5.2.5
if [ ! -x target/moto-venv/bin/moto_server ]; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "test.sh: installing python3-venv for the S3 audit tests" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    else
      echo "test.sh: the S3 audit tests need Python 3 with venv: 'sudo apt-get install python3-venv'" >&2
      exit 1
    fi
  fi
  echo "test.sh: installing moto[server]==$MOTO_VERSION into target/moto-venv for the S3 audit tests" >&2
  rm -rf target/moto-venv
  if ! { python3 -m venv target/moto-venv &&
         target/moto-venv/bin/pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" &&
         [ -x target/moto-venv/bin/moto_server ]; }; then
    rm -rf target/moto-venv
    echo "test.sh: could not install moto[server]==$MOTO_VERSION into target/moto-venv" >&2
    exit 1
  fi
fi

# The hosted-login browser test drives Debian's Chromium through chromedriver.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing chromium and chromium-driver for the browser test" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "test.sh: the browser test needs chromium and chromedriver: 'sudo apt-get install chromium chromium-driver'" >&2
  fi
fi

# The reference apps (examples/) are built with npm for the apps' browser test.
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing nodejs and npm for the example apps" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "test.sh: the example apps need Node.js and npm: 'sudo apt-get install nodejs npm'" >&2
    exit 1
  fi
fi
(cd examples && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent >/dev/null)

exec cargo test --locked "$@"
