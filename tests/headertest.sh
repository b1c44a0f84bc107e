#!/bin/sh
# Compile every public header alone as strict C99: a header must include
# what it uses and nothing in it may need C11 or extensions.
set -eu
cc=$1
inc=$2
status=0
for h in $(cd "$inc" && find sync_protocol -name '*.h' | sort); do
  if ! printf '#include "%s"\nint sp_headertest_dummy;\n' "$h" |
      "$cc" -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only \
        -I "$inc" -x c -; then
    echo "FAIL: $h does not compile alone as C99" >&2
    status=1
  else
    echo "ok: $h"
  fi
done
exit $status
