#!/bin/bash
# spsync leader --exit-when-synced counts a follower's durable position as
# last acknowledged to any leader process of the log (kept with the log):
#   1. a follower syncs fully and exits; a restarted leader with
#      --exit-when-synced exits at once although no follower connects;
#   2. after the log grows, the same leader waits (and times out), since
#      the follower's kept position is behind the latest.
# Timeouts are a few seconds: the failure this guards against is waiting
# forever.
set -u
sp=$1
. "$(dirname "${BASH_SOURCE[0]}")/spsync_test_lib.sh"
{ echo "library $(cat /proc/sys/kernel/random/uuid)"
  "$sp" fingerprint --key L.key --pairing-line leader --address "127.0.0.1:$port"
  "$sp" fingerprint --key F.key --pairing-line follower; } > p.txt

echo "0. leader writes 50 entries, follower syncs them and exits"
"$sp" leader --key L.key --pairing p.txt --log L.db --rate 100000 --until 50 \
  --exit-when-synced --timeout 30 >> leader.out 2>&1 &
lpid=$!; pids+=($lpid)
"$sp" follower --key F.key --pairing p.txt --log F.db --exit-at 50 \
  --timeout 30 >> follower.out 2>&1 &
fpid=$!; pids+=($fpid)
wait $fpid || fail "follower did not sync"
wait $lpid || fail "first leader did not see the follower synced"

echo "1. restarted leader, follower gone: exits at once"
start=$(date +%s)
"$sp" leader --key L.key --pairing p.txt --log L.db --exit-when-synced \
  --timeout 4 >> leader.out 2>&1
rc=$?
[ $rc -eq 0 ] || fail "restarted leader exited $rc (4: timed out waiting for a follower that already has everything)"
[ $(( $(date +%s) - start )) -le 3 ] || fail "restarted leader took too long"
tail -n 1 leader.out | grep -q "every follower acknowledged it" || fail "no synced message"

echo "2. log grown past the kept position: the leader waits"
"$sp" leader --key L.key --pairing p.txt --log L.db --rate 100000 --until 60 \
  --exit-when-synced --timeout 2 >> leader.out 2>&1
rc=$?
[ $rc -eq 4 ] || fail "leader exited $rc with a follower behind, expected a timeout (4)"
echo "ok: spsync leader --exit-when-synced uses kept follower positions"
