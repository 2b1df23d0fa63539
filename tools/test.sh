#!/usr/bin/env bash
# The whole test suite, as CI runs it, every label (unit, e2e, install, fuzz) somewhere:
#   1. g++, CMake, CTest: the unit tests first (seconds), then e2e and install;
#   2. clang++, meson test: every suite;
#   3. g++ under AddressSanitizer + UndefinedBehaviorSanitizer: every label but install (an
#      installed grace is checked in 1 and 2; its consumers would need the sanitizer runtime);
#   4. clang, libFuzzer: a bounded run of every fuzz target on its seed corpus.
# Warnings are errors everywhere. Each phase says what it does, shows the build's progress, and
# ends with its time; about 20 minutes on an idle 2-core machine, and it must stay under 45.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
budget_minutes=45
start=$SECONDS
phase_start=$SECONDS
current=

phase() {
  phase_start=$SECONDS
  current=$*
  echo
  echo "== $* =="
}
# A step that fails ends the run (set -e): say which phase, after how long.
trap 'status=$?; if [ "$status" -ne 0 ] && [ -n "$current" ]; then
  echo "tools/test.sh: failed (status $status) in \"$current\" after $((SECONDS - phase_start)) s (total $((SECONDS - start)) s)" >&2
fi' EXIT
done_phase() { echo "-- $* done in $((SECONDS - phase_start)) s (total $((SECONDS - start)) s)"; }
# Runs a command quietly; shows its output only when it fails.
quiet() {
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    echo "failed: $*" >&2
    return 1
  fi
  rm -f "$log"
}

phase "setup: Debian packages (tools/setup.sh)"
tools/setup.sh
done_phase "setup"

phase "1/4 g++, CMake, CTest (build/gcc, RelWithDebInfo)"
echo "configure: cmake -B build/gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo"
CXX=g++ quiet cmake -S . -B build/gcc -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "build, $jobs jobs"
cmake --build build/gcc -j "$jobs"
echo "ctest -L unit"
(cd build/gcc && ctest --output-on-failure -j "$jobs" -L unit)
echo "ctest -LE unit (e2e, install)"
(cd build/gcc && ctest --output-on-failure -j "$jobs" -LE unit)
done_phase "g++, CMake"

phase "2/4 clang++, meson test (build/meson-clang, debugoptimized)"
if [ ! -f build/meson-clang/build.ninja ]; then
  echo "meson setup build/meson-clang --buildtype=debugoptimized -Dwerror=true"
  CXX=clang++ quiet meson setup build/meson-clang --buildtype=debugoptimized -Dwerror=true
fi
echo "build, $jobs jobs"
meson compile -C build/meson-clang -j "$jobs"
echo "meson test, every suite"
meson test -C build/meson-clang --no-rebuild --print-errorlogs --num-processes "$jobs"
done_phase "clang++, meson"

phase "3/4 g++, ASan + UBSan (build/sanitize, Debug)"
echo "configure: cmake -B build/sanitize -DCMAKE_BUILD_TYPE=Debug -DGRACE_SANITIZE=ON"
CXX=g++ quiet cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=Debug -DGRACE_SANITIZE=ON
echo "build, $jobs jobs"
cmake --build build/sanitize -j "$jobs"
echo "ctest -LE install (unit, e2e)"
(cd build/sanitize && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j "$jobs" -LE install)
done_phase "sanitizers"

phase "4/4 clang, libFuzzer (build/fuzz): bounded runs on the seed corpus"
echo "configure: cmake -B build/fuzz -DGRACE_FUZZ=ON (libraries and fuzz targets only)"
CXX=clang++ quiet cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGRACE_FUZZ=ON \
  -DGRACE_BUILD_TESTS=OFF -DGRACE_BUILD_SAMPLES=OFF -DGRACE_BUILD_TOOLS=OFF
echo "build, $jobs jobs"
cmake --build build/fuzz -j "$jobs"
echo "ctest -L fuzz"
(cd build/fuzz && ctest --output-on-failure -j "$jobs" -L fuzz)
done_phase "fuzz"

total=$((SECONDS - start))
echo
echo "all passed in $((total / 60)) min $((total % 60)) s"
if [ "$total" -gt $((budget_minutes * 60)) ]; then
  echo "warning: over the ${budget_minutes}-minute budget of CI on a 2-core machine" >&2
fi
