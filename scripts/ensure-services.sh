#!/usr/bin/env bash
# Make PostgreSQL, Redis and Chromium available for the test suite on a Debian machine:
# install what is missing (Debian packages), start what is not running, and create the
# `marketing_hub` database role. Safe to run again; does nothing when all is in place.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then sudo "$@"; else echo "need root for: $*" >&2; exit 1; fi
  else
    "$@"
  fi
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then need_root apt-get update -qq; apt_updated=1; fi
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Python's venv module (Debian splits it out).
python3 -c "import ensurepip, venv" 2>/dev/null || apt_install python3-venv python3-pip

# PostgreSQL
if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  echo "installing PostgreSQL…"; apt_install postgresql
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "starting PostgreSQL…"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  need_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
# A role with a password works under both trust (this machine) and scram (Debian's default).
need_root runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -d postgres <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marketing_hub') THEN
    CREATE ROLE marketing_hub LOGIN CREATEDB PASSWORD 'marketing_hub';
  END IF;
END $$;
SQL
if ! runuser -u postgres -- psql -tAq -d postgres -c "SELECT 1 FROM pg_database WHERE datname='marketing_hub'" | grep -q 1; then
  need_root runuser -u postgres -- createdb -O marketing_hub marketing_hub
fi

# Redis
if ! command -v redis-server >/dev/null; then echo "installing Redis…"; apt_install redis-server; fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis…"
  mkdir -p /var/lib/redis /var/log/redis
  need_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# Chromium for the admin's browser tests (Playwright drives Debian's build; no download).
if [ ! -x /usr/bin/chromium ]; then echo "installing Chromium…"; apt_install chromium; fi
