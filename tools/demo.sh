#!/usr/bin/env bash
# The main job: install what is missing, build, and referee grace-http through a burst of
# restarts under load. restart-harness prints its summary table and the verdict, and exits
# non-zero if a single request was lost.
#
# It installs and builds only what it runs (tools/setup.sh demo; the targets grace-http and
# restart-harness, in build/demo: -O2 without debug information, and no tests, which makes the
# compilation about 40% shorter than tools/test.sh's build/gcc), and says each step with the
# build's own progress.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { echo "demo [$((SECONDS - start)) s]: $*"; }
step "Debian packages (tools/setup.sh demo)"
tools/setup.sh demo
step "configure build/demo (cmake, -O2)"
mkdir -p build
CXX=${CXX:-g++} cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
  -DGRACE_BUILD_TESTS=OFF >build/.demo-configure.log 2>&1 || { cat build/.demo-configure.log; exit 1; }
step "build grace-http and restart-harness, $(nproc) jobs"
cmake --build build/demo -j "$(nproc)" --target grace-http restart-harness
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
build/demo/tools/restart-harness \
  --target "tcp://127.0.0.1:$port" --mode http-keepalive --clients "${CLIENTS:-64}" \
  --restarts "${RESTARTS:-20}" --pidfile "$work/http.pid" --plot "$plot" \
  -- build/demo/samples/grace-http "127.0.0.1:$port" --pidfile "$work/http.pid"
