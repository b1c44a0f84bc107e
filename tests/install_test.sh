#!/bin/sh
# Install the build into a temporary prefix, then build minimal_host.c out
# of tree against it, once with CMake (find_package, shared and static) and
# once with pkg-config (shared and --static), and run each.
set -eu
build=$1
src=$2
cc=$3
flags=${4:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

cmake --install "$build" --prefix "$prefix" > "$tmp/install.log"
for f in include/sync_protocol/sync_protocol.h lib/pkgconfig/sync_protocol.pc \
         lib/cmake/sync_protocol/sync_protocolConfig.cmake; do
  [ -f "$prefix/$f" ] || { echo "FAIL: $f not installed" >&2; exit 1; }
done
ls "$prefix"/lib/libsync_protocol.so* "$prefix"/lib/libsync_protocol.a > /dev/null

echo "== CMake find_package"
cmake -S "$src/tests/install" -B "$tmp/cm" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
  -DCMAKE_PREFIX_PATH="$prefix" \
  -DMINIMAL_HOST_SOURCE="$src/examples/minimal_host.c" > "$tmp/cm.log"
cmake --build "$tmp/cm" > "$tmp/cmb.log"
LD_LIBRARY_PATH=$prefix/lib "$tmp/cm/minimal_host_shared"
"$tmp/cm/minimal_host_static"

echo "== pkg-config"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/mh_pc" "$src/examples/minimal_host.c" \
  $(pkg-config --cflags --libs sync_protocol)
LD_LIBRARY_PATH=$prefix/lib "$tmp/mh_pc"
# Our static archive with the dependencies' shared libraries (a fully
# static link would need static builds of GnuTLS's own dependencies).
deps=$(pkg-config --print-requires-private sync_protocol | awk '{print $1}')
# shellcheck disable=SC2046,SC2086
"$cc" $flags -o "$tmp/mh_pc_static" "$src/examples/minimal_host.c" \
  $(pkg-config --cflags sync_protocol) "$prefix/lib/libsync_protocol.a" \
  $(pkg-config --libs $deps)
"$tmp/mh_pc_static"
echo "ok: installed headers, libraries, pkg-config and CMake package work"
