#!/usr/bin/env bash
# The main job: install what is missing, build, and show grace-echo surviving a burst of
# restarts while clients talk to it. Every round keeps one connection open across the restart
# (the old generation must finish it) and opens a fresh one afterwards (the new generation must
# answer it, with no refused connection in between).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build/gcc -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/gcc -j "$(nproc)" >/dev/null

restarts=${RESTARTS:-10}
work=$(mktemp -d /tmp/grace-demo-XXXXXX)
pidfile="$work/echo.pid"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 18080)
build/gcc/samples/grace-echo "127.0.0.1:$port" --pidfile "$pidfile" --drain-timeout 5 2>"$work/server.log" &
first_pid=$!
cleanup() {
  [ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  wait "$first_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for _ in $(seq 100); do [ -s "$pidfile" ] && break; sleep 0.05; done
echo "grace-echo serving 127.0.0.1:$port as pid $(cat "$pidfile"); $restarts restarts follow"

ok=0 failed=0
echo_once() {  # fd, text: one line out, the same line back within 2 s
  local reply=""
  printf '%s\n' "$2" >&"$1" && read -r -t 2 reply <&"$1" && [ "$reply" = "$2" ]
}
for round in $(seq "$restarts"); do
  old=$(cat "$pidfile")
  exec 5<>"/dev/tcp/127.0.0.1/$port"
  if echo_once 5 "before-$round"; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
  kill -USR2 "$old"
  for _ in $(seq 200); do [ "$(cat "$pidfile")" != "$old" ] && break; sleep 0.01; done
  # The connection opened before the restart is still served by the old generation.
  if echo_once 5 "during-$round"; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
  exec 5>&-
  exec 6<>"/dev/tcp/127.0.0.1/$port"
  if echo_once 6 "after-$round"; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
  exec 6>&-
  printf 'restart %2d: pid %s -> %s\n' "$round" "$old" "$(cat "$pidfile")"
done

echo "--- server log (last lines) ---"
tail -n 6 "$work/server.log"
echo "-------------------------------"
if [ "$failed" -eq 0 ]; then
  echo "PASS: 0 lost in $((ok + failed)) requests across $restarts restarts"
else
  echo "FAIL: $failed of $((ok + failed)) requests lost across $restarts restarts"
  exit 1
fi
