#!/usr/bin/env bash
# Tiny process manager for `make up`/`make down`: pid files in var/run, logs in var/log.
#   proc.sh start NAME CMD...   proc.sh stop NAME...   proc.sh status NAME...
#   proc.sh wait-http URL NAME
# A process counts as running only while it is alive (a killed process that nobody has reaped yet
# is a zombie, not alive) and is still the one we started (its start time is recorded next to the
# pid, so a pid the kernel has given to another process does not count). `start` after a crash
# therefore starts it again. Production uses systemd or compose instead (docs/operations.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN=${PROC_RUN_DIR:-var/run} LOG=${PROC_LOG_DIR:-var/log}
mkdir -p "$RUN" "$LOG"

# Print the start time of PID when it is alive and not a zombie; fail otherwise.
started_at() {
  local pid=$1 stat fields
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  if [ -d /proc/self ]; then
    { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
    # Fields after "(comm)" (comm may hold spaces): state is field 3, start time field 22.
    read -ra fields <<<"${stat##*) }"
    case "${fields[0]}" in Z|X|x) return 1 ;; esac
    echo "${fields[19]}"
  else # no /proc (macOS, BSD): ps shows zombies as Z too
    local state
    state=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    case "$state" in Z*|"") return 1 ;; esac
    ps -o lstart= -p "$pid"
  fi
}

running() {
  local pid now
  [ -f "$RUN/$1.pid" ] || return 1
  pid=$(cat "$RUN/$1.pid")
  now=$(started_at "$pid") || return 1
  # Pid files written before start times were recorded have no .start: alive is all we know.
  [ ! -f "$RUN/$1.start" ] || [ "$(cat "$RUN/$1.start")" = "$now" ]
}

# Live processes left in the session of a leader that died (say a gunicorn or dramatiq worker
# whose master was killed): proc.sh starts each command as a session leader (setsid), so they
# share its pid as their session id. Not when that pid is alive again: the kernel reused it.
leftovers() {
  local sid=$1 file stat fields pid
  [ -d /proc/self ] && [[ "$sid" =~ ^[0-9]+$ ]] || return 0
  ! started_at "$sid" >/dev/null || return 0
  for file in /proc/[0-9]*/stat; do
    { read -r stat <"$file"; } 2>/dev/null || continue
    pid=${stat%% *}
    read -ra fields <<<"${stat##*) }"
    [ "${fields[3]}" = "$sid" ] && [[ "${fields[0]}" != [ZXx] ]] && echo "$pid"
  done
  return 0
}

end_leftovers() {
  local pids
  pids=$(leftovers "$1")
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 25); do [ -n "$(leftovers "$1")" ] || return 0; sleep 0.2; done
  pids=$(leftovers "$1")
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
}

case "${1:-}" in
  start)
    name=$2; shift 2
    if running "$name"; then echo "  $name already running (pid $(cat "$RUN/$name.pid"))"; exit 0; fi
    [ ! -f "$RUN/$name.pid" ] || end_leftovers "$(cat "$RUN/$name.pid")"
    nohup setsid "$@" >>"$LOG/$name.log" 2>&1 &
    pid=$!
    echo "$pid" >"$RUN/$name.pid"
    started_at "$pid" >"$RUN/$name.start" || rm -f "$RUN/$name.start"
    sleep 0.5
    running "$name" || { echo "  $name failed to start; last lines of $LOG/$name.log:"; tail -20 "$LOG/$name.log"; exit 1; }
    echo "  $name started (pid $(cat "$RUN/$name.pid"), log $LOG/$name.log)" ;;
  stop)
    shift
    for name in "$@"; do
      if running "$name"; then
        pid=$(cat "$RUN/$name.pid")
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do started_at "$pid" >/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "  $name stopped"
      elif [ -f "$RUN/$name.pid" ]; then
        end_leftovers "$(cat "$RUN/$name.pid")"
      fi
      rm -f "$RUN/$name.pid" "$RUN/$name.start"
    done ;;
  status)
    shift
    for name in "$@"; do
      if running "$name"; then echo "  $name running (pid $(cat "$RUN/$name.pid"))"; else echo "  $name stopped"; fi
    done ;;
  wait-http)
    url=$2 name=$3
    for _ in $(seq 100); do
      curl -sf "$url" >/dev/null && { echo "  $name answering at $url"; exit 0; }
      running "$name" || break
      sleep 0.3
    done
    echo "  $name is not answering at $url; last lines of $LOG/$name.log:"; tail -30 "$LOG/$name.log"; exit 1 ;;
  *) echo "usage: proc.sh start|stop|status|wait-http ..." >&2; exit 2 ;;
esac
