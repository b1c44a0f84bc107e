#!/bin/bash
# spsync prints the cause of a failure, not only its class (issue 14
# item 4): a port in use, a key file in a missing directory or missing,
# and a follower whose log cannot grow (a file size limit plays the full
# disk: the follower says so once, instead of slowing down silently).
# SQLite calls a write past the limit "disk I/O error (File too large)"
# and ENOSPC "database or disk is full" (sp_errdetail_test checks that
# one through SQLite's max_page_count).
set -u
sp=$1
. "$(dirname "${BASH_SOURCE[0]}")/spsync_test_lib.sh"
{ echo "library $(cat /proc/sys/kernel/random/uuid)"
  "$sp" fingerprint --key L.key --pairing-line leader --address "127.0.0.1:$port"
  "$sp" fingerprint --key F.key --pairing-line follower; } > p.txt

expect() { # file, fixed text
  grep -qF -- "$2" "$1" || fail "$1 lacks: $2"
}

echo "1. a key file in a missing directory, a missing key file"
"$sp" keygen --out nodir/k.key > keygen.out 2>&1 && fail "keygen succeeded"
expect keygen.out "cannot write nodir/k.key: No such file or directory"
"$sp" follower --key nokey.key --pairing p.txt --log F.db --timeout 2 \
  > nokey.out 2>&1 && fail "follower without a key succeeded"
expect nokey.out "cannot load key nokey.key: No such file or directory"

echo "2. the leader's port is taken"
"$sp" leader --key L.key --pairing p.txt --log L.db --rate 100000 \
  --until 20000 --timeout 60 > leader.out 2>&1 &
pids+=($!)
sleep 1
"$sp" leader --key L.key --pairing p.txt --log L2.db --timeout 2 \
  > busy.out 2>&1 && fail "a second leader bound the same port"
expect busy.out "spsync: cannot listen on 127.0.0.1:$port: Address already in use"

echo "3. the follower's log cannot grow"
# SIGXFSZ ignored: the write fails (EFBIG) instead of killing the process.
( trap '' XFSZ; ulimit -f 512
  exec "$sp" follower --key F.key --pairing p.txt --log F.db --exit-at 20000 \
    --timeout 6 ) > follower.out 2>&1 && fail "the follower synced past its limit"
expect follower.out "spsync: cannot apply: "
grep -qE "cannot apply: (database or disk is full|disk I/O error \(File too large\))" \
  follower.out || fail "the follower did not say why it cannot apply"
[ "$(grep -c "cannot apply" follower.out)" -eq 1 ] ||
  fail "the failure was reported more than once per episode"
echo "ok: spsync prints the causes"
