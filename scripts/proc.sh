#!/usr/bin/env bash
# Tiny process manager for `make up`/`make down`: pid files in var/run, logs in var/log.
#   proc.sh start NAME CMD...   proc.sh stop NAME...   proc.sh status NAME...
#   proc.sh wait-http URL NAME
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN=var/run LOG=var/log
mkdir -p "$RUN" "$LOG"

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

case "${1:-}" in
  start)
    name=$2; shift 2
    if running "$name"; then echo "  $name already running (pid $(cat "$RUN/$name.pid"))"; exit 0; fi
    nohup setsid "$@" >>"$LOG/$name.log" 2>&1 &
    echo $! >"$RUN/$name.pid"
    sleep 0.5
    running "$name" || { echo "  $name failed to start; last lines of $LOG/$name.log:"; tail -20 "$LOG/$name.log"; exit 1; }
    echo "  $name started (pid $(cat "$RUN/$name.pid"), log $LOG/$name.log)" ;;
  stop)
    shift
    for name in "$@"; do
      if running "$name"; then
        pid=$(cat "$RUN/$name.pid")
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "  $name stopped"
      fi
      rm -f "$RUN/$name.pid"
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
