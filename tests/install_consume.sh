#!/usr/bin/env bash
# Installs grace into a temporary prefix and builds two tiny outside projects against it: one
# through find_package(grace), one through pkg-config. Both must compile, link and run.
set -euo pipefail
source_dir=$(cd "$1" && pwd)
work=$(mktemp -d /tmp/grace-install-XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"

cmake -S "$source_dir" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGRACE_BUILD_TESTS=OFF -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build "$work/build" --target grace_shared grace_static grace_uv_shared grace_uv_static \
  restart-harness grace-listen >/dev/null
cmake --install "$work/build" >/dev/null
"$prefix/bin/restart-harness" --help | grep -q '^usage: restart-harness'
"$prefix/bin/grace-listen" --help | grep -q '^usage: grace-listen'
echo "restart-harness and grace-listen installed: ok"

# find_package(grace) with the grace::grace target.
cmake -S "$source_dir/tests/consumer" -B "$work/consumer" -G Ninja \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
LD_LIBRARY_PATH="$prefix/lib:$prefix/lib/$(gcc -print-multiarch 2>/dev/null || true)" \
  "$work/consumer/grace-consumer" | grep -q '^listening on 127.0.0.1:'
echo "find_package(grace): ok"

# pkg-config: plain compiler line, no CMake.
pc_dir=$(dirname "$(find "$prefix" -name grace.pc | head -1)")
flags=$(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs grace)
# shellcheck disable=SC2086
c++ -std=c++17 "$source_dir/tests/consumer/consumer.cpp" -o "$work/pc-consumer" $flags
lib_dir=$(PKG_CONFIG_PATH="$pc_dir" pkg-config --variable=libdir grace)
LD_LIBRARY_PATH="$lib_dir" "$work/pc-consumer" | grep -q '^listening on 127.0.0.1:'
echo "pkg-config grace: ok"
# add_subdirectory: libraries only, clean under the consumer's -Wshadow -Wconversion -Werror.
cmake -S "$source_dir/tests/subproject" -B "$work/subproject" -G Ninja \
  -DGRACE_SOURCE_DIR="$source_dir" >/dev/null
cmake --build "$work/subproject" >/dev/null
"$work/subproject/uv-consumer" | grep -q 'served and drained ok'
echo "add_subdirectory(grace): ok"
# meson subproject: builds, and installs nothing of grace's.
mkdir -p "$work/meson/subprojects"
cp "$source_dir/tests/meson_subproject/meson.build" "$source_dir/tests/consumer/uv_consumer.cpp" "$work/meson/"
ln -s "$source_dir" "$work/meson/subprojects/grace"
meson setup "$work/meson/build" "$work/meson" >/dev/null
ninja -C "$work/meson/build" >/dev/null
"$work/meson/build/uv-consumer" | grep -q 'served and drained ok'
installed=$(cd "$work/meson/build" && meson introspect --installed)
[ "$installed" = "{}" ] || { echo "a meson subproject installed: $installed"; exit 1; }
echo "meson subproject: ok"
echo "1 passed, 0 failed"
