#!/usr/bin/env bash
# Installs what grace needs to build and test, from Debian's packages; does nothing when all
# of it is present. Run as root on Debian 12.
#   tools/setup.sh        everything tools/test.sh needs
#   tools/setup.sh demo   only what tools/demo.sh needs (configure with g++, build grace-http and
#                         restart-harness): no clang, meson, doctest, nginx, gunicorn or
#                         systemd-container
set -euo pipefail
demo_packages=(g++ cmake ninja-build pkg-config libuv1-dev libexpected-dev libasio-dev nlohmann-json3-dev
               procps)
packages=(g++ clang cmake ninja-build meson pkg-config libuv1-dev doctest-dev libexpected-dev libasio-dev
          libclang-rt-14-dev nlohmann-json3-dev nginx gunicorn help2man
          systemd systemd-container procps)
if [ "${1:-}" = demo ]; then packages=("${demo_packages[@]}"); fi
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
echo "setup: apt-get update"
apt-get update -qq
# A line per package fetched, unpacked and set up: progress, not silence.
echo "setup: apt-get install (${#missing[@]} packages and their dependencies)"
apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" |
  { grep --line-buffered -E '^(Get:|Setting up|Need to get|[0-9]+ upgraded)' | sed -u 's/^/setup:   /'; true; }
echo "setup: done"
