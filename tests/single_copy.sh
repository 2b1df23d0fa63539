#!/usr/bin/env bash
# Every program in a build links one copy of grace: a program with libgrace.so and libgrace.a
# both would capture its inherited environment twice, and one copy would see nothing. The
# installed programs link libgrace.so (unless GRACE_STATIC_PROGRAMS), the others libgrace.a; a
# program that loads libgrace.so must define none of grace's API (grace::net) itself.
set -euo pipefail
build_dir=$1
bad=0
checked=0
while IFS= read -r program; do
  checked=$((checked + 1))
  if ldd "$program" 2>/dev/null | grep -q 'libgrace\.so' && nm -C --defined-only "$program" | grep -q ' grace::net::'; then
    echo "links the shared grace beside the static one: $program"
    bad=1
  fi
done < <(find "$build_dir/samples" "$build_dir/tools" "$build_dir/tests" -maxdepth 1 -type f -perm -u+x \
           \( -name 'grace-*' -o -name 'test_*' -o -name 'restart-harness' \) ! -name '*.sh' ! -name '*.p')
[ "$checked" -gt 0 ] || { echo "no program found under $build_dir"; exit 1; }
echo "$checked programs checked"
[ "$bad" -eq 0 ] && echo "1 passed, 0 failed" || { echo "0 passed, 1 failed"; exit 1; }
