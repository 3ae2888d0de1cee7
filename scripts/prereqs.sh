#!/usr/bin/env bash
# Make sure the system programs a target needs are on the machine. Checks are `command -v`
# lookups, so a machine that has everything pays a few milliseconds. With --install (root on
# Debian/Ubuntu) the missing ones are installed with apt-get; otherwise each missing program is
# named with the package that provides it, and the script exits 1.
#   scripts/prereqs.sh [--install] GROUP...
# Groups:
#   up      what `make up` needs besides the services: Python's venv, curl, the image builder
#   test    what `make test` needs: chromium (ops browser test), tmux, the ssh client,
#           mmdebstrap and podman (test images), busybox, influxd, curl
#   ci      up + test + git
# A program name (podman, mmdebstrap, ...) also works as a group of one.
set -euo pipefail

INSTALL=0
groups=()
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    -*) echo "prereqs: unknown option $arg" >&2; exit 2 ;;
    *) groups+=("$arg") ;;
  esac
done

# command -> Debian package
declare -A PACKAGE=(
  [python3]=python3 [venv]=python3-venv [curl]=curl [git]=git
  [chromium]=chromium [tmux]=tmux [ssh]=openssh-client [ssh-keygen]=openssh-client
  [mmdebstrap]=mmdebstrap [podman]=podman [runc]=runc [busybox]=busybox-static
  [influxd]=influxdb [flock]=util-linux [jq]=jq
)
declare -A GROUP=(
  [up]="python3 venv curl flock mmdebstrap podman runc busybox"
  [test]="chromium tmux jq ssh ssh-keygen mmdebstrap podman runc busybox influxd curl flock"
)
GROUP[ci]="${GROUP[up]} ${GROUP[test]} git"

present() { # present COMMAND
  case "$1" in
    # Debian's python3 has no ensurepip without python3-venv, so `python3 -m venv` fails.
    venv) python3 -c 'import ensurepip, venv' >/dev/null 2>&1 ;;
    chromium) [ -n "${CHROMIUM_BIN:-}" ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null ;;
    podman) command -v podman >/dev/null || command -v docker >/dev/null ;;
    # Podman needs runc here (crun fails on this kind of machine); Docker brings its own runtime.
    runc) command -v runc >/dev/null || { ! command -v podman >/dev/null && command -v docker >/dev/null; } ;;
    # The tests only talk to InfluxDB's HTTP API; one already answering will do.
    influxd) command -v influxd >/dev/null || curl -sf "${TEST_INFLUXDB_URL:-http://127.0.0.1:8086}/ping" >/dev/null 2>&1 ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

wanted=()
for g in "${groups[@]}"; do
  if [ -n "${GROUP[$g]:-}" ]; then read -ra members <<<"${GROUP[$g]}"; wanted+=("${members[@]}")
  elif [ -n "${PACKAGE[$g]:-}" ]; then wanted+=("$g")
  else echo "prereqs: unknown group or program $g" >&2; exit 2
  fi
done

missing=() packages=()
declare -A seen=()
for cmd in "${wanted[@]}"; do
  [ -z "${seen[$cmd]:-}" ] || continue
  seen[$cmd]=1
  present "$cmd" && continue
  missing+=("$cmd")
  [[ " ${packages[*]} " == *" ${PACKAGE[$cmd]} "* ]] || packages+=("${PACKAGE[$cmd]}")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "prereqs: installing ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the package lists unless they are less than a day old.
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    apt-get update -qq >/dev/null
  fi
  apt-get install -y -qq "${packages[@]}" >/dev/null \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq "${packages[@]}" >/dev/null; }
  still=()
  for cmd in "${missing[@]}"; do present "$cmd" || still+=("$cmd"); done
  [ ${#still[@]} -eq 0 ] && exit 0
  missing=("${still[@]}")
fi

echo "prereqs: missing on this machine:" >&2
for cmd in "${missing[@]}"; do
  printf '  - %-11s (Debian/Ubuntu package: %s)\n' "$cmd" "${PACKAGE[$cmd]}" >&2
done
echo "Install them (apt-get install ${packages[*]}), or run this as root on Debian/Ubuntu" \
  "where make installs them itself." >&2
exit 1
