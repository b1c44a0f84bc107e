#!/bin/sh
# The library as a packager installs it and as a host consumes it.
#
#   install_test.sh BUILD SRC CC [FLAGS]
#
# 1. SRC built with every module, installed Debian-style: DESTDIR, prefix
#    /usr, multiarch libdir.  Its .pc has plain /usr paths (pkg-config
#    drops -I/usr/include) and is used through PKG_CONFIG_SYSROOT_DIR.
#    Out-of-tree programs build against it with find_package(...
#    COMPONENTS quic sqlite) (shared and static), with plain pkg-config and
#    with pkg-config --static, and run.
# 2. SRC built core-only (no QUIC, no SQLite) into a second prefix: it
#    installs no header it cannot link, a QUIET component lookup falls back
#    to the core, a REQUIRED one fails, and its consumers link and run.
# 3. BUILD (the tree ctest runs in) installed as configured: spsync, its
#    manual page, the SONAME.
# Both variants build the library only (a few seconds each) with CC and
# FLAGS, which the consumers use too (a sanitizer build needs them).
set -eu
build=$1
src=$2
cc=$3
flags=${4:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
started=$(date +%s)

fail() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "== $*"; }

# Configure and build SRC's library alone into $1 with options $2...
variant() {
  dir=$1
  shift
  cmake -S "$src" -B "$dir" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
    -DCMAKE_SHARED_LINKER_FLAGS="$flags" -DSP_BUILD_TESTS=OFF \
    -DSP_BUILD_EXAMPLES=OFF -DSP_BUILD_BENCH=OFF -DSP_BUILD_FUZZ=OFF \
    "$@" > "$dir.log" 2>&1 || { cat "$dir.log" >&2; fail "configure $dir"; }
  cmake --build "$dir" -j2 >> "$dir.log" 2>&1 ||
    { tail -40 "$dir.log" >&2; fail "build $dir"; }
}

# Configure and build tests/install with CASE=$1 against prefix $2 in $3.
consumer() {
  cmake -S "$src/tests/install" -B "$3" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
    -DCMAKE_PREFIX_PATH="$2" -DCASE="$1" \
    -DMINIMAL_HOST_SOURCE="$src/examples/minimal_host.c" > "$3.log" 2>&1 ||
    { cat "$3.log" >&2; fail "configure the $1 consumer"; }
  cmake --build "$3" >> "$3.log" 2>&1 ||
    { cat "$3.log" >&2; fail "build the $1 consumer"; }
}

# needs BINARY LIB: does BINARY's dynamic section name LIB?
needs() { readelf -d "$1" | grep -q "NEEDED.*\[$2"; }

multiarch=$("$cc" -print-multiarch 2>/dev/null || true)
libdir=lib/${multiarch:-x86_64-linux-gnu}

# ---- 1. every module, DESTDIR, /usr, multiarch libdir ----
log "full build, DESTDIR install into /usr with libdir $libdir"
variant "$tmp/full" -DCMAKE_INSTALL_PREFIX=/usr -DCMAKE_INSTALL_LIBDIR="$libdir"
DESTDIR=$tmp/dest cmake --install "$tmp/full" --prefix /usr \
  > "$tmp/full-install.log"
root=$tmp/dest/usr
for f in include/sync_protocol/sync_protocol.h \
         include/sync_protocol/version.h include/sync_protocol/features.h \
         include/sync_protocol/quic.h include/sync_protocol/sqlite_store.h \
         "$libdir/libsync_protocol.a" "$libdir/pkgconfig/sync_protocol.pc" \
         "$libdir/cmake/sync_protocol/sync_protocolConfig.cmake" \
         "$libdir/cmake/sync_protocol/sync_protocolConfigVersion.cmake"; do
  [ -f "$root/$f" ] || fail "$f not installed under DESTDIR/usr"
done
if find "$root" -name '*.in' | grep -q .; then
  fail "a template was installed"
fi
grep -q '^#define SP_HAVE_QUIC 1' "$root/include/sync_protocol/features.h" ||
  fail "features.h of a QUIC build lacks SP_HAVE_QUIC"
grep -q '^#define SP_HAVE_SQLITE 1' "$root/include/sync_protocol/features.h" ||
  fail "features.h of an SQLite build lacks SP_HAVE_SQLITE"

# The SONAME carries the minor while the major is 0 (docs/abi.md).
major=$(sed -n 's/^#define SP_VERSION_MAJOR //p' "$root/include/sync_protocol/version.h")
minor=$(sed -n 's/^#define SP_VERSION_MINOR //p' "$root/include/sync_protocol/version.h")
if [ "$major" = 0 ]; then soname=libsync_protocol.so.0.$minor
else soname=libsync_protocol.so.$major; fi
readelf -d "$root/$libdir/libsync_protocol.so" |
  grep -q "SONAME.*\[$soname\]" || fail "SONAME is not $soname"

log "CMake: find_package(sync_protocol REQUIRED COMPONENTS quic sqlite)"
consumer modules "$root" "$tmp/cm-full"
grep -qx "quic,sqlite" "$tmp/cm-full/expect.txt" || fail "modules case"
"$tmp/cm-full/minimal_host_shared" > /dev/null
"$tmp/cm-full/minimal_host_static" > /dev/null
"$tmp/cm-full/features_host_shared" quic,sqlite "$tmp"
"$tmp/cm-full/features_host_static" quic,sqlite "$tmp"
needs "$tmp/cm-full/features_host_shared" "$soname" ||
  fail "the shared consumer does not load $soname"
if needs "$tmp/cm-full/features_host_static" libsync_protocol; then
  fail "the static consumer loads libsync_protocol.so"
fi

log "pkg-config from DESTDIR/usr/$libdir/pkgconfig"
export PKG_CONFIG_PATH="$root/$libdir/pkgconfig"
# A /usr install's .pc is what a distribution ships: absolute paths.
[ "$(pkg-config --variable=prefix sync_protocol)" = /usr ] ||
  fail "the /usr .pc's prefix is not /usr"
case " $(pkg-config --cflags sync_protocol) " in
  *" -I/usr/include "*) fail "pkg-config keeps -I/usr/include" ;;
esac
export PKG_CONFIG_SYSROOT_DIR="$tmp/dest"
[ "$(cd "$(pkg-config --variable=libdir sync_protocol)" && pwd -P)" = \
  "$(cd "$root/$libdir" && pwd -P)" ] || fail "pkg-config's libdir is wrong"
[ "$(cd "$(pkg-config --variable=includedir sync_protocol)" && pwd -P)" = \
  "$(cd "$root/include" && pwd -P)" ] || fail "pkg-config's includedir is wrong"
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/pc_shared" "$src/tests/install/features_host.c" \
  $(pkg-config --cflags --libs sync_protocol)
LD_LIBRARY_PATH=$root/$libdir "$tmp/pc_shared" quic,sqlite "$tmp"

log "pkg-config --static: $(pkg-config --static --libs sync_protocol)"
static_libs=$(pkg-config --static --libs sync_protocol)
# What the private closures of gnutls and sqlite3 would add, and a stock
# Debian 12 with the -dev packages has no link file for (libunistring-dev
# and zlib1g-dev are not among their dependencies).
for l in -lunistring -lz; do
  case " $static_libs " in
    *" $l "*) fail "pkg-config --static asks for $l" ;;
  esac
done
# Our archive, with the dependencies as the --static line names them.
static_libs=$(printf '%s\n' "$static_libs" |
  sed 's/-lsync_protocol /-Wl,-Bstatic -lsync_protocol -Wl,-Bdynamic /')
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/pc_static" "$src/tests/install/features_host.c" \
  $(pkg-config --cflags sync_protocol) $static_libs
if needs "$tmp/pc_static" libsync_protocol; then
  fail "the pkg-config --static consumer loads libsync_protocol.so"
fi
"$tmp/pc_static" quic,sqlite "$tmp"
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR

# ---- 2. core only, second prefix ----
log "core-only build, installed into a second prefix"
variant "$tmp/core" -DSP_WITH_QUIC=OFF -DSP_WITH_SQLITE=OFF
core=$tmp/core-prefix
cmake --install "$tmp/core" --prefix "$core" > "$tmp/core-install.log"
for h in quic.h sqlite_store.h; do
  [ ! -e "$core/include/sync_protocol/$h" ] ||
    fail "a core-only install has $h"
done
if grep -q '^#define SP_HAVE_' "$core/include/sync_protocol/features.h"; then
  fail "a core-only features.h defines SP_HAVE_*"
fi
# Every installed header compiles alone: none includes a missing one.
for h in $(cd "$core/include" && find sync_protocol -name '*.h' | sort); do
  printf '#include <%s>\nint sp_install_test_dummy;\n' "$h" |
    "$cc" -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only \
      -I "$core/include" -x c - ||
    fail "installed $h does not compile alone"
done

log "CMake: QUIET COMPONENTS quic falls back to the core"
consumer fallback "$core" "$tmp/cm-core"
grep -qx none "$tmp/cm-core/expect.txt" || fail "fallback case"
"$tmp/cm-core/minimal_host_shared" > /dev/null
"$tmp/cm-core/minimal_host_static" > /dev/null
"$tmp/cm-core/features_host_shared" none "$tmp"
"$tmp/cm-core/features_host_static" none "$tmp"

log "CMake: REQUIRED COMPONENTS quic fails cleanly"
if cmake -S "$src/tests/install" -B "$tmp/cm-req" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_PREFIX_PATH="$core" -DCASE=required > "$tmp/cm-req.log" 2>&1; then
  fail "REQUIRED COMPONENTS quic configured against a core-only install"
fi
# CMake wraps the message: join its lines first.
tr -s ' \n' '  ' < "$tmp/cm-req.log" |
  grep -qF "built without the component(s) quic" || {
  cat "$tmp/cm-req.log" >&2
  fail "the failed lookup does not say the quic component is missing"
}

log "pkg-config (plain and --static) of the core-only install"
export PKG_CONFIG_PATH="$core/lib/pkgconfig"
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/pc_core" "$src/tests/install/features_host.c" \
  $(pkg-config --cflags --libs sync_protocol)
LD_LIBRARY_PATH=$core/lib "$tmp/pc_core" none "$tmp"
static_libs=$(pkg-config --static --libs sync_protocol |
  sed 's/-lsync_protocol /-Wl,-Bstatic -lsync_protocol -Wl,-Bdynamic /')
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/pc_core_static" "$src/tests/install/features_host.c" \
  $(pkg-config --cflags sync_protocol) $static_libs
"$tmp/pc_core_static" none "$tmp"
unset PKG_CONFIG_PATH

# ---- 3. BUILD as configured: the tool and its manual page ----
log "the tested build's own install"
main=$tmp/main-prefix
cmake --install "$build" --prefix "$main" > "$tmp/main-install.log"
pc=$(find "$main" -name sync_protocol.pc)
[ -n "$pc" ] || fail "BUILD installs no sync_protocol.pc"
feat=$main/include/sync_protocol/features.h
if grep -q '^#define SP_HAVE_QUIC' "$feat" &&
   grep -q '^#define SP_HAVE_SQLITE' "$feat"; then
  [ -x "$main/bin/spsync" ] || fail "bin/spsync not installed"
  [ -f "$main/share/man/man1/spsync.1" ] ||
    fail "share/man/man1/spsync.1 not installed"
  "$main/bin/spsync" --version | grep -qF "$major.$minor." ||
    fail "spsync --version does not print the project's version"
fi

echo "ok: install test passed in $(( $(date +%s) - started )) s"
