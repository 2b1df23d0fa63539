#!/usr/bin/env bash
# Every C++ snippet of README.md (each ```cpp block) compiled with -Wall -Wextra -Werror against
# this tree's headers, so that what a reader copies compiles as shown.
#
# A snippet is a whole file, unless an HTML comment right before its fence (invisible on the
# rendered page) gives the code around it:
#   <!-- readme_code
#   void serve(int fd);
#   int main() {
#   @@
#   }
#   -->
# The snippet's own #include lines go to the top of the file, the rest where `@@` stands. A
# compiler's message names README.md and its line.
#
# Every shell block (```sh) says, in an HTML comment right before its fence, which test runs
# what it shows (`<!-- shell: tested by test_NAME ... -->`, a test of tests/) or that it needs
# the reader's own setup (`<!-- shell: your setup: WHAT -->`).
#
# usage: test_readme_code.sh SOURCE_DIR [CXX]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 SOURCE_DIR [CXX]" >&2; exit 2; }
source_dir=$(cd "$1" && pwd)
cxx=${2:-${CXX:-c++}}
work=$(mktemp -d /tmp/grace-readme-code-XXXXXX)
trap 'rm -rf "$work"' EXIT

# Split README.md into snippet-N.cpp and, where given, wrapper-N.cpp (line numbers in line-N).
awk -v dir="$work" '
  /^<!-- readme_code$/ { inwrap = 1; wrapper = ""; next }
  inwrap && /^-->$/ { inwrap = 0; pending = 1; next }
  inwrap { wrapper = wrapper $0 "\n"; next }
  /^```cpp$/ {
    n++; incode = 1
    printf "%d\n", NR + 1 > (dir "/line-" n)
    if (pending) printf "%s", wrapper > (dir "/wrapper-" n)
    pending = 0; next
  }
  incode && /^```$/ { incode = 0; next }
  incode { print > (dir "/snippet-" n); next }
  !/^$/ { pending = 0 }
  END { print n + 0 > (dir "/count") }' "$source_dir/README.md"

# The shell blocks' markers.
shell_failed=0
while IFS=: read -r line marker; do
  case "$marker" in
    "<!-- shell: your setup: "*" -->") echo "ok: README.md line $line: a shell block for the reader's own setup" ;;
    "<!-- shell: tested by test_"*" -->")
      name=${marker#"<!-- shell: tested by "}
      name=${name%%[ ,]*}
      name=${name% -->}
      if [ -e "$source_dir/tests/$name.cpp" ] || [ -e "$source_dir/tests/$name.sh" ]; then
        echo "ok: README.md line $line: a shell block tested by $name"
      else
        echo "FAIL: README.md line $line: a shell block tested by $name, which tests/ does not have"
        shell_failed=$((shell_failed + 1))
      fi ;;
    *)
      echo "FAIL: README.md line $line: a shell block without <!-- shell: tested by test_NAME --> or <!-- shell: your setup: ... --> before it"
      shell_failed=$((shell_failed + 1)) ;;
  esac
done < <(awk '/^```sh$/ { print NR ":" previous } !/^$/ { previous = $0 }' "$source_dir/README.md")

count=$(cat "$work/count")
[ "$count" -gt 0 ] || { echo "no \`\`\`cpp block in README.md"; exit 1; }
# shellcheck disable=SC2046
flags=(-std=c++17 -Wall -Wextra -Werror -I"$source_dir/include" $(pkg-config --cflags libuv))
failed=0
for i in $(seq "$count"); do
  snippet="$work/snippet-$i" line=$(cat "$work/line-$i") file="$work/readme-$i.cpp"
  [ -f "$snippet" ] || : >"$snippet"
  if [ -f "$work/wrapper-$i" ]; then
    {
      grep '^#include' "$snippet" || true
      while IFS= read -r w; do
        if [ "$w" = "@@" ]; then
          echo "#line $line \"README.md\""
          sed 's/^#include.*//' "$snippet"
        else
          echo "$w"
        fi
      done <"$work/wrapper-$i"
    } >"$file"
  else
    { echo "#line $line \"README.md\""; cat "$snippet"; } >"$file"
  fi
  if out=$("$cxx" "${flags[@]}" -c "$file" -o "$work/readme-$i.o" 2>&1); then
    echo "ok: README.md line $line: the snippet compiles ($(wc -l <"$snippet") lines)"
  else
    failed=$((failed + 1))
    echo "FAIL: README.md line $line: the snippet does not compile with ${flags[*]}:"
    printf '%s\n' "$out" | head -n 40 | sed 's/^/    /'
    echo "    the file compiled:"
    sed 's/^/      | /' "$file"
  fi
done
echo "$count C++ snippets, $failed failed; shell blocks: $shell_failed without a valid marker"
[ "$failed" -eq 0 ] && [ "$shell_failed" -eq 0 ]
