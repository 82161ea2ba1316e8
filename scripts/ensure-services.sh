#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis servers the integration tests use are answering,
# starting them with the machine's own commands when they are not.
set -u

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

wait_for() {
  local check=$1 name=$2
  for _ in $(seq 1 50); do
    if $check; then return 0; fi
    sleep 0.2
  done
  echo "ensure-services: $name did not come up" >&2
  return 1
}

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "ensure-services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    wait_for pg_up PostgreSQL || true
  else
    echo "ensure-services: PostgreSQL is not installed; its tests will skip outside CI" >&2
  fi
fi

if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "ensure-services: starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
    wait_for redis_up Redis || true
  else
    echo "ensure-services: Redis is not installed; its tests will skip outside CI" >&2
  fi
fi
exit 0
