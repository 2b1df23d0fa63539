#!/usr/bin/env bash
# The main job: install what is missing, build, and referee grace-http through a burst of
# restarts under load. restart-harness prints its summary table and the verdict, and exits
# non-zero if a single request was lost.
#
# It installs and builds only what it runs (tools/setup.sh demo; the targets grace-http and
# restart-harness, in build/demo), and says each step with the build's own progress. The build is
# the demo's own, made to be short to compile rather than fast to run: -O1 without debug
# information, grace's static libraries only (restart-harness linked as with
# GRACE_STATIC_PROGRAMS, so no shared library and no program-side copy of the internals to build),
# no tests. Measured on the 2-core VM: 68 build steps, 53 s of CPU, against 76 steps and 63 s of
# CPU for -O2 with the shared libraries (-O1 takes 75% of -O2's time a file, -O0 60%); two jobs at
# a time make that about 30 s on an idle 2-core machine, which with a fresh machine's apt (about
# 60 s) starts the demo within 2 minutes. A unity build would compile faster still, but grace's
# sources do not build as one (types in anonymous namespaces across files, the .init_array hook of
# lib/startup_state.cpp). apt cannot overlap the configure: that needs the compilers, CMake and the
# libraries apt installs. The library's own build types are unchanged: tools/test.sh builds
# build/gcc at RelWithDebInfo, and the benchmarks run from there.
# DEMO_BUILD_DIR chooses another build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
build=${DEMO_BUILD_DIR:-build/demo}
step() { echo "demo [$((SECONDS - start)) s]: $*"; }
step "Debian packages (tools/setup.sh demo)"
tools/setup.sh demo
step "configure $build (cmake: -O1, static libraries, no tests)"
mkdir -p "$build"
CXX=${CXX:-g++} cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
  -DGRACE_BUILD_TESTS=OFF -DGRACE_STATIC_PROGRAMS=ON >"$build/demo-configure.log" 2>&1 ||
  { cat "$build/demo-configure.log"; exit 1; }
step "build grace-http and restart-harness, $(nproc) jobs"
cmake --build "$build" -j "$(nproc)" --target grace-http restart-harness
step "built"

work=$(mktemp -d /tmp/grace-demo-XXXXXX)
trap 'rm -rf "$work"' EXIT
# A port nobody listens on (the harness fails loudly if it is taken meanwhile).
port=18080
for _ in $(seq 50); do
  candidate=$((20000 + RANDOM % 20000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then port=$candidate; break; fi
done
plot=/tmp/grace-demo-timeline.svg
echo "grace-http on 127.0.0.1:$port, ${RESTARTS:-20} restarts with SIGUSR2 under keep-alive load, ${CLIENTS:-64} clients"
echo "(timeline: $plot)"
"$build/tools/restart-harness" \
  --target "tcp://127.0.0.1:$port" --mode http-keepalive --clients "${CLIENTS:-64}" \
  --restarts "${RESTARTS:-20}" --pidfile "$work/http.pid" --plot "$plot" \
  -- "$build/samples/grace-http" "127.0.0.1:$port" --pidfile "$work/http.pid"
