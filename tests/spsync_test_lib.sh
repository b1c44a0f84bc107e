# spsync_test_lib.sh: the common start of the bash tests that run spsync
# processes (spsync_synced_test.sh, quic_process_test.sh).  Sourced after
# `sp=$1` (the spsync binary): makes a scratch directory and moves into
# it, removes it and kills the processes listed in `pids` on exit, defines
# fail (prints the tail of every *.out and exits 1), makes the keys L.key
# and F.key, and picks a random leader port in $port.
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
cd "$tmp"
fail() { echo "FAIL: $*" >&2; for f in *.out; do echo "--- $f"; tail -n 20 "$f"; done >&2; exit 1; }

"$sp" keygen --out L.key > /dev/null && "$sp" keygen --out F.key > /dev/null || fail keygen
port=$((40000 + RANDOM % 20000))
