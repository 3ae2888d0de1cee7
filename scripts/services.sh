#!/usr/bin/env bash
# Find or start the services the platform needs, on loopback, idempotently:
# PostgreSQL, Redis, InfluxDB 1.x and Podman's Docker-compatible API socket (with a local
# busybox image). Data lives under ./var. Prints what it found, what it started, what is missing.
#   scripts/services.sh            find or start everything
#   scripts/services.sh --install  also apt-get install what is missing (Debian, as root)
#   scripts/services.sh --env      print the environment the tests and make up use
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="$ROOT/var"
PG_HOST=127.0.0.1 PG_PORT=5432
REDIS_PORT=6379
INFLUX_PORT="${INFLUX_PORT:-8086}"
PODMAN_SOCK="$VAR/podman/podman.sock"
# An engine socket already chosen (DOCKER_HOST=unix://...) is used, or started, instead of ours.
case "${DOCKER_HOST:-}" in unix://*) PODMAN_SOCK="${DOCKER_HOST#unix://}" ;; esac
INSTALL=0
missing=()

say() { printf '  %-10s %s\n' "$1" "$2"; }
die() { printf 'services: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    --env)
      echo "DOCKER_HOST=unix://$PODMAN_SOCK"
      echo "INFLUXDB_URL=http://127.0.0.1:$INFLUX_PORT"
      exit 0 ;;
    *) die "unknown option $arg" ;;
  esac
done

apt_install() {
  if [ "$INSTALL" = 1 ] && command -v apt-get >/dev/null; then
    say install "$*"
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
      apt-get update -qq >/dev/null
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  fi
}

wait_for() { # wait_for SECONDS CMD...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.3
  done
}

mkdir -p "$VAR"
echo "services:"

# --- PostgreSQL --------------------------------------------------------------------------------
if pg_isready -q -h $PG_HOST -p $PG_PORT 2>/dev/null; then
  say postgres "running on $PG_HOST:$PG_PORT"
else
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    wait_for 30 pg_isready -q -h $PG_HOST -p $PG_PORT || die "PostgreSQL did not start"
    say postgres "started on $PG_HOST:$PG_PORT"
  else
    missing+=("PostgreSQL 13+ on $PG_HOST:$PG_PORT (apt-get install postgresql)")
  fi
fi

# --- Redis -------------------------------------------------------------------------------------
if redis-cli -h 127.0.0.1 -p $REDIS_PORT ping 2>/dev/null | grep -q PONG; then
  say redis "running on 127.0.0.1:$REDIS_PORT"
else
  command -v redis-server >/dev/null || apt_install redis-server
  if command -v redis-server >/dev/null; then
    mkdir -p "$VAR/redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT --save "" --appendonly no \
      --dir "$VAR/redis" --logfile "$VAR/redis/redis.log"
    wait_for 15 redis-cli -p $REDIS_PORT ping || die "Redis did not start (see var/redis/redis.log)"
    say redis "started on 127.0.0.1:$REDIS_PORT"
  else
    missing+=("Redis 6+ on 127.0.0.1:$REDIS_PORT (apt-get install redis-server)")
  fi
fi

# --- InfluxDB 1.x ------------------------------------------------------------------------------
if curl -sf "http://127.0.0.1:$INFLUX_PORT/ping" >/dev/null 2>&1; then
  say influxdb "running on 127.0.0.1:$INFLUX_PORT"
else
  command -v influxd >/dev/null || apt_install influxdb
  if command -v influxd >/dev/null; then
    mkdir -p "$VAR/influxdb"
    cat > "$VAR/influxdb/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$((INFLUX_PORT + 2))"
[meta]
  dir = "$VAR/influxdb/meta"
[data]
  dir = "$VAR/influxdb/data"
  wal-dir = "$VAR/influxdb/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$INFLUX_PORT"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
    # Below the platform's priority (nice 10): on a machine it shares with the socket server, its
    # compactions must not hold up heartbeats (docs/benchmarks.md); metrics only arrive later.
    nohup setsid nice -n 10 influxd -config "$VAR/influxdb/influxdb.conf" \
      >"$VAR/influxdb/influxd.log" 2>&1 &
    wait_for 30 curl -sf "http://127.0.0.1:$INFLUX_PORT/ping" \
      || die "InfluxDB did not start (see var/influxdb/influxd.log)"
    say influxdb "started on 127.0.0.1:$INFLUX_PORT (data in var/influxdb)"
  else
    missing+=("InfluxDB 1.x on 127.0.0.1:$INFLUX_PORT (apt-get install influxdb)")
  fi
fi

# --- Podman's Docker-compatible API ------------------------------------------------------------
podman_ok() { curl -sf --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1; }
if podman_ok; then
  say podman "API socket at $PODMAN_SOCK"
else
  command -v podman >/dev/null || apt_install podman runc busybox-static
  if command -v podman >/dev/null; then
    if [ ! -f /etc/containers/containers.conf ] && [ -w /etc ]; then
      mkdir -p /etc/containers
      # crun fails on this kind of machine (cgroups, rlimits); runc works.
      cat > /etc/containers/containers.conf <<CONF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
CONF
    fi
    mkdir -p "$VAR/podman" "$(dirname "$PODMAN_SOCK")"
    rm -f "$PODMAN_SOCK"
    nohup setsid podman system service --time=0 "unix://$PODMAN_SOCK" >"$VAR/podman/service.log" 2>&1 &
    wait_for 30 podman_ok || die "the Podman API did not start (see var/podman/service.log)"
    say podman "started, API socket at $PODMAN_SOCK"
  else
    missing+=("Podman (apt-get install podman runc busybox-static) or a Docker engine")
  fi
fi

# A local image, since no registry is reachable: busybox as localhost/busybox:latest.
if command -v podman >/dev/null && podman_ok; then
  if podman image exists localhost/busybox:latest 2>/dev/null; then
    say image "localhost/busybox:latest present"
  else
    BB="$(command -v busybox || true)"
    [ -n "$BB" ] || { apt_install busybox-static; BB="$(command -v busybox || true)"; }
    if [ -n "$BB" ]; then
      tmp="$(mktemp -d)"
      mkdir -p "$tmp/bin" "$tmp/tmp" "$tmp/root" "$tmp/etc"
      cp "$BB" "$tmp/bin/busybox"
      for app in sh ls cat echo sleep env id ps nc wget httpd true false kill; do
        ln -s busybox "$tmp/bin/$app"
      done
      echo "root:x:0:0:root:/root:/bin/sh" > "$tmp/etc/passwd"
      tar -C "$tmp" -c . | podman import --change 'CMD ["/bin/sh"]' - localhost/busybox:latest >/dev/null 2>&1
      rm -rf "$tmp"
      say image "built localhost/busybox:latest from the busybox binary"
    else
      missing+=("busybox (apt-get install busybox-static) to build the local test image")
    fi
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "services: missing:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  echo "Run 'scripts/services.sh --install' as root on Debian/Ubuntu, or install them yourself." >&2
  exit 1
fi
