#!/usr/bin/env bash
# The whole test suite, as CI runs it: g++ with CMake/CTest, clang with meson, g++ again under
# AddressSanitizer + UndefinedBehaviorSanitizer, and a bounded libFuzzer run of every fuzz
# target on its seed corpus. Warnings are errors everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
jobs=$(nproc)

echo "== g++, CMake, CTest =="
CXX=g++ cmake -S . -B build/gcc -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/gcc -j "$jobs"
(cd build/gcc && ctest --output-on-failure -j "$jobs")

echo "== clang++, meson test =="
if [ ! -f build/meson-clang/build.ninja ]; then
  CXX=clang++ meson setup build/meson-clang --buildtype=debugoptimized -Dwerror=true >/dev/null
fi
meson test -C build/meson-clang --print-errorlogs --num-processes "$jobs"

echo "== g++, ASan + UBSan =="
CXX=g++ cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=Debug -DGRACE_SANITIZE=ON >/dev/null
cmake --build build/sanitize -j "$jobs"
# The install test builds its own tree without sanitizers; the other suites cover the code.
(cd build/sanitize && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j "$jobs" -E install_consume)

echo "== clang, libFuzzer (bounded runs on the seed corpus) =="
CXX=clang++ cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRACE_FUZZ=ON \
  -DGRACE_BUILD_TESTS=OFF -DGRACE_BUILD_SAMPLES=OFF -DGRACE_BUILD_TOOLS=OFF >/dev/null
cmake --build build/fuzz -j "$jobs"
(cd build/fuzz && ctest --output-on-failure -j "$jobs" -L fuzz)
