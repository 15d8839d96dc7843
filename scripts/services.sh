#!/usr/bin/env bash
# Make sure the services the tests talk to run on this machine:
#   Redis       127.0.0.1:6379
#   PostgreSQL  127.0.0.1:5432, database `test`, user `postgres` without a password from loopback
# Installs what is missing with apt-get and starts what does not answer. A service that already
# answers is left as it is (only the `test` database is created in it when missing).
set -euo pipefail
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.1; done; return 1; }
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { $sudo apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# Redis
if ! port_open 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  $sudo redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_port 6379
fi
echo "redis: 127.0.0.1:6379"

# PostgreSQL
if ! port_open 5432; then
  command -v pg_lsclusters >/dev/null && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
    || apt_install postgresql
  if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    $sudo pg_createcluster "$version" main >/dev/null
  fi
  read -r version cluster _ < <(pg_lsclusters -h | head -1)
  hba="/etc/postgresql/$version/$cluster/pg_hba.conf"
  # The tests connect as postgres over loopback without a password (a test machine's server).
  if ! $sudo grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
    $sudo sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  if port_open 5432; then  # started by the package's install
    $sudo pg_ctlcluster "$version" "$cluster" reload
  else
    $sudo pg_ctlcluster "$version" "$cluster" start
    wait_port 5432
  fi
fi
psql_test() { psql -h 127.0.0.1 -p 5432 -U postgres -v ON_ERROR_STOP=1 -tAq "$@"; }
if ! command -v psql >/dev/null; then
  apt_install postgresql-client
fi
if [ "$(psql_test -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'test'")" != "1" ]; then
  psql_test -d postgres -c "CREATE DATABASE test"
fi
psql_test -d test -c "SELECT 1" >/dev/null
echo "postgresql: 127.0.0.1:5432/test"
