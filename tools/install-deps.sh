#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages tierkv builds and tests with: only those missing, so a second
# run does nothing and takes well under a second. Runs as root, or through sudo when there is one.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git python3 python3-venv systemd
  libboost-dev libspdlog-dev libfmt-dev libxxhash-dev libtomlplusplus-dev libcli11-dev
  libsystemd-dev liburing-dev librocksdb-dev libzstd-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-dev pybind11-dev python3-pytest python3-numpy
)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "==> error: dpkg-query not found: this script supports Debian and Ubuntu only." >&2
  echo "==> Install the equivalents of these packages yourself: ${packages[*]}" >&2
  exit 1
fi

# One dpkg-query for all packages; unknown ones are missing (its error goes to /dev/null).
declare -A installed=()
while IFS=$'\t' read -r name state; do
  [[ $state == installed ]] && installed[$name]=1
done < <(dpkg-query -W -f='${Package}\t${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)

missing=()
for p in "${packages[@]}"; do
  [[ -n ${installed[$p]:-} ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "==> All ${#packages[@]} build dependencies are installed"
  exit 0
fi

sudo=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "==> error: missing packages: ${missing[*]}" >&2
    echo "==> Run this script as root (sudo is not installed) to install them." >&2
    exit 1
  fi
fi

echo "==> Installing ${#missing[@]} missing packages: ${missing[*]}"
echo "==> apt-get update"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
echo "==> apt-get install"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  "${missing[@]}"
echo "==> Build dependencies installed"
