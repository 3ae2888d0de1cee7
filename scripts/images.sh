#!/usr/bin/env bash
# Build the local test images from Debian packages with mmdebstrap; no registry is needed.
#   localhost/dc-ssh:latest    bookworm + openssh-server: root login by key only, fresh host keys
#                              per container (tests, the demo, issue-14 style SSH into rentals)
#   localhost/dc-bench:latest  bookworm + python3 and numpy (the host self-test benchmark)
#   localhost/dc-bench-gpu:latest  (only when named) dc-bench + PyTorch with its CUDA libraries
#                              from PyPI: the benchmark's GPU part, for SELF_TEST_GPU_IMAGE on
#                              GPU hosts (several GB; the host's driver comes in at run time)
# Each image carries the hash of its recipe in the label org.distributedcompute.recipe; an image
# whose label matches is kept, so a second run takes well under a second. Root file systems are
# written to var/images/<name>-<hash>.tar and re-imported from there when only the engine lost them.
#   scripts/images.sh [--install] [--force] [NAME...]   build what is missing or out of date
#   scripts/images.sh --check [NAME...]                 exit 1 when one is missing or out of date
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/var/images"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
LABEL=org.distributedcompute.recipe
ALL=(dc-ssh dc-bench)
OPTIONAL=(dc-bench-gpu)  # built only when named

say() { printf '  %-10s %s\n' "$1" "$2"; }
die() { printf 'images: %s\n' "$*" >&2; exit 1; }

# --- Recipes: everything in these functions is hashed, so changing one rebuilds its image. -----
recipe_dc_ssh() {
  PACKAGES=openssh-server,iproute2,procps,ca-certificates
  CMD='["/usr/local/sbin/dc-start-sshd"]'
  EXPOSE=22
  # Host keys made at build time would be shared by every container: remove them here, make
  # them when a container starts. pam_loginuid needs CAP_AUDIT_CONTROL, which containers lack.
  HOOKS=(
    'rm -f "$1"/etc/ssh/ssh_host_*'
    'printf "%s\n" "PermitRootLogin prohibit-password" "PasswordAuthentication no" "KbdInteractiveAuthentication no" "UseDNS no" > "$1/etc/ssh/sshd_config.d/10-dc.conf"'
    'sed -i "s/^session\s\+required\s\+pam_loginuid.so/session optional pam_loginuid.so/" "$1/etc/pam.d/sshd"'
    'install -d -m 700 "$1/root/.ssh"'
    'printf "%s\n" "#!/bin/sh" "set -e" "rm -f /etc/ssh/ssh_host_*" "ssh-keygen -A >/dev/null" "install -d -m 755 /run/sshd" "install -d -m 700 /root/.ssh" "exec /usr/sbin/sshd -D -e \"\$@\"" > "$1/usr/local/sbin/dc-start-sshd"'
    'chmod 755 "$1/usr/local/sbin/dc-start-sshd"'
  )
}

recipe_dc_bench() {
  PACKAGES=python3,python3-numpy,ca-certificates
  CMD='["/usr/bin/python3"]'
  EXPOSE=
  HOOKS=()
}

recipe_dc_bench_gpu() {
  PACKAGES=python3,python3-numpy,python3-pip,ca-certificates
  CMD='["/usr/bin/python3"]'
  EXPOSE=
  HOOKS=(
    "chroot \"\$1\" python3 -m pip install --quiet --no-cache-dir --break-system-packages torch==2.5.1"
  )
}

common_options() {
  # Docs, man pages and translations are a third of the size and nobody reads them in a test.
  COMMON=(
    --variant=apt --components=main
    --aptopt='APT::Install-Recommends "false"'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  )
}

recipe_hash() { # recipe_hash NAME
  { echo "$SUITE"; declare -f "recipe_${1//-/_}" common_options; } | sha256sum | cut -c1-16
}

# --- Engine ------------------------------------------------------------------------------------
if command -v podman >/dev/null; then ENGINE=podman
elif command -v docker >/dev/null; then ENGINE=docker
else ENGINE=""
fi

image_label() { # the recipe hash an existing image carries, empty when none
  [ -n "$ENGINE" ] || return 0
  $ENGINE image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "localhost/$1:latest" \
    2>/dev/null | sed 's/<no value>//' || true
}

import_tar() { # import_tar NAME HASH TAR
  local name=$1 hash=$2 tar=$3 changes=()
  changes+=(--change "CMD $CMD" --change "LABEL $LABEL=$hash")
  [ -z "$EXPOSE" ] || changes+=(--change "EXPOSE $EXPOSE")
  local log
  log=$($ENGINE import "${changes[@]}" "$tar" "localhost/$name:latest" 2>&1) \
    || { echo "$log" >&2; die "$ENGINE import failed for $name"; }
}

build() { # build NAME HASH
  local name=$1 hash=$2 tar="$OUT/$1-$2.tar" mode=root hook
  local hook_args=()
  for hook in "${HOOKS[@]}"; do hook_args+=(--customize-hook="$hook"); done
  [ "$(id -u)" = 0 ] || mode=unshare
  mkdir -p "$OUT"
  rm -f "$OUT/$name"-*.tar "$OUT/$name".tmp.tar
  # stdin closed: mmdebstrap reads extra sources from a stdin that is not a terminal.
  mmdebstrap --quiet --mode="$mode" "${COMMON[@]}" --include="$PACKAGES" "${hook_args[@]}" \
    "$SUITE" "$OUT/$name.tmp.tar" "$MIRROR" </dev/null >"$OUT/$name.log" 2>&1 \
    || { tail -30 "$OUT/$name.log" >&2; die "mmdebstrap failed for $name (log: var/images/$name.log)"; }
  mv "$OUT/$name.tmp.tar" "$tar"
  import_tar "$name" "$hash" "$tar"
}

# --- Main --------------------------------------------------------------------------------------
INSTALL=0 FORCE=0 CHECK=0 names=()
for arg in "$@"; do
  case "$arg" in
    --install) INSTALL=1 ;;
    --force) FORCE=1 ;;
    --check) CHECK=1 ;;
    -*) die "unknown option $arg" ;;
    *) [[ " ${ALL[*]} ${OPTIONAL[*]} " == *" $arg "* ]] || die "unknown image $arg (known: ${ALL[*]} ${OPTIONAL[*]})"; names+=("$arg") ;;
  esac
done
[ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")
common_options

if [ "$CHECK" = 1 ]; then
  for name in "${names[@]}"; do
    [ "$(image_label "$name")" = "$(recipe_hash "$name")" ] || { echo "images: localhost/$name:latest is missing or out of date" >&2; exit 1; }
  done
  exit 0
fi

echo "images:"
mkdir -p "$OUT"
# Test workers may ask for the same image at once: one builds, the others then find it.
exec 9>"$OUT/.lock"
flock 9

for name in "${names[@]}"; do
  "recipe_${name//-/_}"
  hash=$(recipe_hash "$name")
  if [ "$FORCE" = 0 ] && [ "$(image_label "$name")" = "$hash" ]; then
    say "$name" "localhost/$name:latest up to date ($hash)"
    continue
  fi
  if [ -z "$ENGINE" ]; then
    [ "$INSTALL" = 1 ] && "$ROOT/scripts/prereqs.sh" --install podman >/dev/null
    command -v podman >/dev/null && ENGINE=podman || die "no container engine: install podman (apt-get install podman runc)"
  fi
  start=$SECONDS
  if [ "$FORCE" = 0 ] && [ -s "$OUT/$name-$hash.tar" ]; then
    import_tar "$name" "$hash" "$OUT/$name-$hash.tar"
    say "$name" "imported var/images/$name-$hash.tar as localhost/$name:latest ($((SECONDS - start)) s)"
    continue
  fi
  if ! command -v mmdebstrap >/dev/null; then
    [ "$INSTALL" = 1 ] && "$ROOT/scripts/prereqs.sh" --install mmdebstrap >/dev/null
    command -v mmdebstrap >/dev/null || die "building $name needs mmdebstrap (apt-get install mmdebstrap)"
  fi
  build "$name" "$hash"
  say "$name" "built localhost/$name:latest from Debian $SUITE in $((SECONDS - start)) s ($hash)"
done
