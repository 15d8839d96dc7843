#!/usr/bin/env bash
# Make sure the services the tests talk to run on this machine: Redis on 127.0.0.1:6379.
# Installs redis-server with apt-get when missing and starts it when nothing answers on its port.
set -euo pipefail
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 6379; then
  if ! command -v redis-server >/dev/null; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  fi
  $sudo redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do port_open 6379 && break; sleep 0.1; done
fi
port_open 6379 && echo "redis: 127.0.0.1:6379"
