# scripts/lib.sh: shared by the scripts; sourced, not run.
# Installs what a fresh Debian 12 machine lacks, and configures/builds.

SP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SP_JOBS=$(nproc 2>/dev/null || echo 2)

# Packages every script needs: toolchains, the library's dependencies,
# cmocka, and the tools the tests use (valgrind, clang's sanitizer and
# libFuzzer runtimes).
SP_PACKAGES="build-essential cmake pkg-config clang libclang-rt-14-dev
  valgrind libmsgpack-dev libsodium-dev libngtcp2-dev
  libngtcp2-crypto-gnutls-dev libgnutls28-dev libsqlite3-dev sqlite3
  libcmocka-dev python3"

sp_log() { printf '==> %s\n' "$*" >&2; }

# sp_ensure_packages PKG...: apt-get install whichever are missing.
sp_ensure_packages() {
  local missing=() p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  sp_log "installing: ${missing[*]}"
  local sudo=
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >&2
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# sp_build DIR [CMAKE ARGS...]: configure (once) and build.
sp_build() {
  local dir=$1
  shift
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    cmake -S "$SP_ROOT" -B "$dir" "$@" >&2
  fi
  cmake --build "$dir" -j "$SP_JOBS" >&2
}
