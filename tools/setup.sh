#!/usr/bin/env bash
# Installs what grace needs to build and test, from Debian's packages; does nothing when all
# of it is present. Run as root on Debian 12.
set -euo pipefail
packages=(g++ clang cmake ninja-build meson pkg-config libuv1-dev doctest-dev libexpected-dev libasio-dev
          libclang-rt-14-dev nlohmann-json3-dev nginx gunicorn
          systemd procps)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "setup: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: these packages are missing and installing them needs root: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
