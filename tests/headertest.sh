#!/bin/sh
# Compile every public header alone as strict C99: a header must include
# what it uses and nothing in it may need C11 or extensions.
set -eu
# Usage: headertest.sh CC INCLUDE_DIR [EXTRA_INCLUDE_DIR...]: the headers
# of INCLUDE_DIR and of the extra directories (the generated version.h and
# features.h) are tested.
cc=$1
inc=$2
shift 2
extra=
for d in "$@"; do
  extra="$extra -I $d"
done
headers=$(for d in "$inc" "$@"; do
  (cd "$d" && find sync_protocol -name '*.h')
done | sort -u)
# The file of header $1 in the first of "$inc" and $2... holding it.
path_of() {
  h1=$1
  shift
  for d in "$inc" "$@"; do
    if [ -f "$d/$h1" ]; then echo "$d/$h1"; return; fi
  done
}
dirs="$*"
status=0
for h in $headers; do
  if ! printf '#include "%s"\nint sp_headertest_dummy;\n' "$h" |
      "$cc" -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only \
        -I "$inc" $extra -x c -; then
    echo "FAIL: $h does not compile alone as C99" >&2
    status=1
  else
    echo "ok: $h"
  fi
done

# The same headers from C++ (hosts include them there), and every _INIT
# macro used to initialise its struct in a C++ translation unit: an
# initialiser C accepts (0 for an enum) can be an error in C++.
case $cc in
  *clang) cxx=${cc}++ ;;
  *gcc) cxx=$(printf '%s' "$cc" | sed 's/gcc$/g++/') ;;
  *) cxx=c++ ;;
esac
if ! command -v "$cxx" >/dev/null 2>&1; then
  echo "FAIL: no C++ compiler ($cxx) for the C++ header test" >&2
  exit 1
fi
for h in $headers; do
  tu=$(printf '#include "%s"\n' "$h")
  uses=
  for m in $(sed -n 's/^#define \(SP_[A-Z0-9_]*_INIT\)[ \\].*/\1/p;s/^#define \(SP_[A-Z0-9_]*_INIT\)$/\1/p' \
      "$(path_of "$h" $dirs)"); do
    type=$(printf '%s' "${m%_INIT}" | tr 'A-Z' 'a-z')
    uses="$uses $type v_$type = $m; (void)v_$type;"
  done
  if ! printf '%s\nvoid sp_headertest_cxx(void);\nvoid sp_headertest_cxx(void) {%s }\n' \
      "$tu" "$uses" |
      "$cxx" -std=c++11 -pedantic -Wall -Wextra -Werror \
        -Wmissing-field-initializers -fsyntax-only -I "$inc" $extra -x c++ -; then
    echo "FAIL: $h does not compile as C++ (with its _INIT macros)" >&2
    status=1
  else
    echo "ok (C++${uses:+, _INIT}): $h"
  fi
done
exit $status
