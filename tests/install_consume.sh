#!/usr/bin/env bash
# Installs the build tree that runs this test (nothing is built again) into a directory under it,
# checks the installed libraries (SONAME from the project version; only namespace grace exported,
# never grace::detail nor a std:: instantiation, at any compiler and optimisation level), moves the
# install tree to another directory, and uses it from there, as a project of its own would:
#   CMake build (cmake --install --prefix):  find_package(grace), pkg-config grace and grace-uv, and
#     add_subdirectory(grace) from the source tree;
#   meson build (meson install --destdir):   pkg-config grace and grace-uv, and grace as a meson
#     subproject (meson installs no CMake package).
# The move checks that the install is relocatable: the .pc files find their prefix from their own
# directory (${pcfiledir}), the CMake package from its own, the programs their libraries through
# $ORIGIN; PKG_CONFIG_PATH alone points pkg-config at the moved copy.
# add_subdirectory and the meson subproject compile grace's library sources (their own -Wshadow
# -Wconversion -Werror must hold), at the default build type (no optimisation) and only the
# targets the consumer needs.
#
# usage: install_consume.sh SOURCE_DIR BUILD_DIR VERSION
# The work directory is BUILD_DIR/install-consume.tmp, removed on any exit or signal, and at the
# start if a run killed with SIGKILL (a CTest timeout) left it behind.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 SOURCE_DIR BUILD_DIR VERSION" >&2; exit 2; }
source_dir=$(cd "$1" && pwd)
build_dir=$(cd "$2" && pwd)
version=$3

# SONAME: libgrace.so.MAJOR.MINOR while grace is 0.x (every minor release may break the ABI), then
# libgrace.so.MAJOR.
major=${version%%.*}
minor=${version#*.}
minor=${minor%%.*}
if [ "$major" = 0 ]; then soversion="$major.$minor"; else soversion=$major; fi

work="$build_dir/install-consume.tmp"
# One run per build dir at a time: the lock is on the build dir itself, so no file is left over;
# the steps do not inherit it, so that one left running by a SIGKILL does not keep it.
exec 9<"$build_dir"
flock -n 9 || { echo "another install test runs in $build_dir"; exit 1; }
# A signal stops the step under way (its whole process group: cmake, ninja, the compilers), then
# the EXIT trap removes the work directory.
step=
cleanup() { rm -rf "$work" 2>/dev/null || { sleep 1; rm -rf "$work"; }; }
stop() {
  if [ -n "$step" ]; then
    kill -TERM -- "-$step" 2>/dev/null || true
    wait "$step" 2>/dev/null || true
  fi
  exit "$1"
}
trap cleanup EXIT
trap 'stop 129' HUP
trap 'stop 130' INT
trap 'stop 143' TERM
rm -rf "$work"
mkdir -p "$work"

passed=0
failed=0
say() { printf '[%3d s] %s\n' "$SECONDS" "$*"; }
ok() { passed=$((passed + 1)); say "ok: $*"; }
fail() { failed=$((failed + 1)); say "FAIL: $*"; }
# Runs a command quietly, in a process group of its own that a signal stops whole; on failure
# shows the end of its output and stops the test.
run() {
  local log="$work/step.log" status=0
  setsid "$@" >"$log" 2>&1 9<&- &
  step=$!
  wait "$step" || status=$?
  step=
  if [ "$status" -ne 0 ]; then
    say "failed (status $status): $*"
    tail -n 40 "$log"
    exit 1
  fi
}
# Runs a program (bounded) and checks its output has a line matching PATTERN; else shows it.
says() {
  local pattern=$1 out status=0
  shift
  out=$(timeout 60 "$@" 2>&1 9<&-) || status=$?
  if [ "$status" -eq 0 ] && grep -q -- "$pattern" <<<"$out"; then return 0; fi
  echo "$* exited with status $status:"
  printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'
  return 1
}

if [ -f "$build_dir/CMakeCache.txt" ]; then
  kind=cmake
  prefix="$work/prefix"
  say "cmake --install $build_dir --prefix $prefix"
  run cmake --install "$build_dir" --prefix "$prefix"
  root=$prefix
elif [ -d "$build_dir/meson-info" ]; then
  kind=meson
  destdir="$work/destdir"
  # meson install builds first whatever it installs that is not built yet (a man page, say), as
  # meson test builds only what the tests it runs depend on; after a full build it builds nothing.
  say "meson install -C $build_dir --destdir $destdir"
  run meson install -C "$build_dir" --destdir "$destdir"
  root=$destdir
else
  echo "$build_dir is neither a CMake nor a meson build dir"
  exit 2
fi

# The installed libraries.
core=$(find "$root" -name "libgrace.so.$soversion*" -type f | head -1)
uv=$(find "$root" -name "libgrace-uv.so.$soversion*" -type f | head -1)
if [ -z "$core" ] || [ -z "$uv" ]; then
  echo "no libgrace.so.$soversion* or libgrace-uv.so.$soversion* installed:"
  find "$root" -name 'libgrace*' | sed 's/^/  /'
  exit 1
fi
lib_dir=$(dirname "$core")
soname_of() { readelf -d "$1" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p'; }
for lib in "$core:libgrace" "$uv:libgrace-uv"; do
  file=${lib%%:*} name=${lib#*:}
  soname=$(soname_of "$file")
  if [ "$soname" = "$name.so.$soversion" ]; then ok "$(basename "$file"): SONAME $soname"
  else fail "$(basename "$file"): SONAME '$soname', expected $name.so.$soversion (version $version)"; fi
  [ -e "$lib_dir/$soname" ] || fail "no $soname in $lib_dir for the loader to find"
  # Exported: names in namespace grace (_ZN5grace, and _ZNK5grace... for const and ref-qualified
  # members) and the typeinfo and vtables of its classes (_ZTI, _ZTS, _ZTV, _ZTT), as
  # cmake/exports.map says. Mangled names: a demangled function template starts with its return
  # type, and std::forward<grace::error> would read "grace::error&& std::forward...".
  exported=$(nm -D --defined-only "$file" | awk '{print $NF}')
  foreign=$(grep -Ev '^_Z(N[KRO]*|T[ISVT]N)5grace' <<<"$exported" || true)
  detail=$(grep -E '^_Z(N[KRO]*|T[ISVT]N)5grace6detail' <<<"$exported" || true)
  if [ -n "$exported" ] && [ -z "$foreign" ] && [ -z "$detail" ]; then
    ok "$(basename "$file") exports namespace grace only, no grace::detail: $(wc -l <<<"$exported") symbols"
  else
    fail "$(basename "$file") exports $(grep -c . <<<"$foreign") symbols outside namespace grace and $(grep -c . <<<"$detail") of grace::detail, for example:"
    printf '%s\n' "$foreign" "$detail" | grep . | head -n 10 | c++filt | cut -c1-200 | sed 's/^/    /'
  fi
done
needed=$(readelf -d "$uv" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
if [[ " $needed" == *" libgrace.so.$soversion "* ]]; then ok "libgrace-uv needs libgrace.so.$soversion"
else fail "libgrace-uv needs $needed, not libgrace.so.$soversion"; fi

# The install tree moved to another directory: from here on only the moved copy is used.
moved="$work/moved"
say "mv $root $moved: the install tree moved"
mv "$root" "$moved"
core=$moved${core#"$root"} uv=$moved${uv#"$root"} lib_dir=$moved${lib_dir#"$root"}
root=$moved
if [ "$kind" = cmake ]; then prefix=$moved; fi

# The installed programs: they run from the install without LD_LIBRARY_PATH, linked with the
# installed libgrace.so (found through their RPATH) unless built with static programs.
for tool in restart-harness grace-listen; do
  program=$(find "$root" -path "*/bin/$tool" -type f | head -1)
  if [ -n "$program" ] && says "^usage: $tool" env -u LD_LIBRARY_PATH "$program" --help; then ok "$tool installed and runs"
  else fail "$tool not installed (${program:-not found}), or its --help does not say its usage"; fi
  if [ -n "$program" ]; then
    loads=$(env -u LD_LIBRARY_PATH ldd "$program" | sed -n 's/^\s*\(libgrace[^ ]*\) => \([^ ]*\).*/\1 \2/p' | tr '\n' ' ')
    if [ -z "$loads" ]; then say "note: $tool links grace statically"
    elif [[ "$loads" == *" $root/"* ]]; then ok "$tool loads the installed grace: $loads"
    else fail "$tool loads a grace from outside the install: $loads"; fi
  fi
done

# pkg-config: a plain compiler line, no build system.
pc_dir=$(dirname "$(find "$root" -name grace.pc | head -1)")
pkg_config=(env PKG_CONFIG_PATH="$pc_dir" pkg-config)
# Relocatable: the flags name the moved copy, found from the .pc file's own directory.
for pc in grace grace-uv; do
  flags=$("${pkg_config[@]}" --cflags --libs "$pc")
  if [[ "$flags" == *"-I$moved/"* && "$flags" == *"-L$moved/"* ]]; then ok "pkg-config $pc names the moved install: $flags"
  else fail "pkg-config $pc does not name the moved install $moved: $flags"; fi
done
say "pkg-config grace: c++ consumer.cpp"
# shellcheck disable=SC2046
run c++ -std=c++17 "$source_dir/tests/consumer/consumer.cpp" -o "$work/pc-consumer" $("${pkg_config[@]}" --cflags --libs grace)
if says '^listening on 127.0.0.1:' env LD_LIBRARY_PATH="$lib_dir" "$work/pc-consumer"; then ok "pkg-config grace"
else fail "pkg-config grace: the consumer did not listen"; fi
say "pkg-config grace-uv: c++ uv_consumer.cpp"
# shellcheck disable=SC2046
run c++ -std=c++17 "$source_dir/tests/consumer/uv_consumer.cpp" -o "$work/pc-uv-consumer" $("${pkg_config[@]}" --cflags --libs grace-uv)
if says 'served and drained ok' env LD_LIBRARY_PATH="$lib_dir" "$work/pc-uv-consumer"; then ok "pkg-config grace-uv"
else fail "pkg-config grace-uv: the consumer did not serve and drain"; fi

if [ "$kind" = cmake ]; then
  # find_package(grace) with the grace::grace target.
  say "find_package(grace): configure and build tests/consumer"
  run cmake -S "$source_dir/tests/consumer" -B "$work/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$prefix"
  run cmake --build "$work/consumer"
  if says '^listening on 127.0.0.1:' env LD_LIBRARY_PATH="$lib_dir" "$work/consumer/grace-consumer"; then
    ok "find_package(grace)"
  else fail "find_package(grace): the consumer did not listen"; fi

  # add_subdirectory: grace's libraries only (its tests, samples and tools default to OFF as a
  # subproject, which tests/subproject checks), clean under the consumer's strict warnings; one
  # consumer with the static libraries, one with the shared ones, installed with grace's
  # libraries (GRACE_INSTALL) and run from the install, without LD_LIBRARY_PATH.
  say "add_subdirectory(grace): configure tests/subproject, build, install"
  run cmake -S "$source_dir/tests/subproject" -B "$work/subproject" -G Ninja -DGRACE_SOURCE_DIR="$source_dir"
  run cmake --build "$work/subproject"
  if says 'served and drained ok' "$work/subproject/uv-consumer"; then ok "add_subdirectory(grace), static"
  else fail "add_subdirectory(grace), static: the consumer did not serve and drain"; fi
  run cmake --install "$work/subproject" --prefix "$work/subproject-prefix"
  if says 'served and drained ok' env -u LD_LIBRARY_PATH "$work/subproject-prefix/bin/uv-consumer-shared"; then
    ok "add_subdirectory(grace), shared: installed with grace's libraries, runs from the install"
  else fail "add_subdirectory(grace), shared: the installed consumer does not run"; fi
else
  # meson subproject: builds, and installs nothing of grace's.
  say "meson subproject: set up tests/meson_subproject, build uv-consumer"
  mkdir -p "$work/meson/subprojects"
  cp "$source_dir/tests/meson_subproject/meson.build" "$source_dir/tests/consumer/uv_consumer.cpp" "$work/meson/"
  ln -s "$source_dir" "$work/meson/subprojects/grace"
  # The subproject even where a grace is installed for pkg-config to find.
  run meson setup --buildtype=plain --force-fallback-for=grace-uv "$work/meson/build" "$work/meson"
  run ninja -C "$work/meson/build" uv-consumer
  if says 'served and drained ok' "$work/meson/build/uv-consumer"; then ok "meson subproject"
  else fail "meson subproject: the consumer did not serve and drain"; fi
  installed=$(cd "$work/meson/build" && meson introspect --installed)
  if [ "$installed" = "{}" ]; then ok "a meson subproject installs nothing"
  else fail "a meson subproject installed: $installed"; fi
fi

say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
