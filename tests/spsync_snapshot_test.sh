#!/bin/bash
# Recovery by snapshot (issue 13) with spsync processes over real UDP on
# 127.0.0.1, real key files and SQLite logs:
#   1. follower F syncs to 5000 and stops; the leader writes on to 20000
#      and prunes through 6000 (spsync prune, while it runs): F is behind
#      what the log keeps;
#   2. F comes back, is told SyncRequired and recovers by snapshot; it is
#      killed (SIGKILL) after some chunks are durable: its log is still
#      the old one (nothing half-installed);
#   3. F restarted resumes the snapshot from its durable chunks; midway the
#      leader is killed and restarted (its source reopens the same
#      snapshot from its .snap file) and F resumes again: F's last line
#      says "resumed 2 times" or more; the restarted leader writes on, F
#      applies those entries incrementally, and the logs end identical,
#      with the same entries by origin;
#   4. a recovery that fails (a snapshot over --snapshot-max) is reported
#      and the follower runs on (exit 4 at --timeout); a follower with
#      --no-snapshots, and one whose leader runs with --no-snapshots,
#      exit 3 (SyncRequired, as before snapshots).
# The transfer is slowed on purpose (--snapshot-delay, 32 KiB chunks) so
# that it can be cut between chunks.
set -u
sp=$1
. "$(dirname "${BASH_SOURCE[0]}")/spsync_test_lib.sh"
"$sp" keygen --out G.key > /dev/null && "$sp" keygen --out H.key > /dev/null || fail keygen
fport=$((port + 1))
lib=$(cat /proc/sys/kernel/random/uuid)
{ echo "library $lib"
  "$sp" fingerprint --key L.key --pairing-line leader --address "127.0.0.1:$port" --name L
  "$sp" fingerprint --key F.key --pairing-line follower --address "127.0.0.1:$fport" --name F; } > p.txt || fail pairing
# Part 4's followers in a pairing of their own: --exit-when-synced above
# waits for every follower listed.
{ echo "library $lib"
  "$sp" fingerprint --key L.key --pairing-line leader --address "127.0.0.1:$port" --name L
  "$sp" fingerprint --key G.key --pairing-line follower --name G
  "$sp" fingerprint --key H.key --pairing-line follower --name H; } > p4.txt || fail pairing

latest() { "$sp" status --log "$1" --digest 2>/dev/null | awk '{print $5}'; }
wait_latest() { # wait_latest <log> <seq> <seconds>
  local i
  for i in $(seq 1 $(($3 * 10))); do
    [ "$(latest "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
# The chunks F's last progress line says are durable ("K of N chunks").
chunks() { grep -o '[0-9]* of [0-9]* chunks' "$1" 2>/dev/null | tail -n 1 | awk '{print $1}'; }
total_chunks() { grep -o '[0-9]* of [0-9]* chunks' "$1" 2>/dev/null | tail -n 1 | awk '{print $3}'; }
wait_chunks() { # wait_chunks <out> <at least> <seconds>
  local i c
  for i in $(seq 1 $(($3 * 10))); do
    c=$(chunks "$1")
    [ -n "$c" ] && [ "$c" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
leader() { # leader <out> <args...> (PAIRING: p.txt)
  local out=$1; shift
  "$sp" leader --key L.key --pairing "${PAIRING:-p.txt}" --log L.db --snapshot-chunk 32768 "$@" >> "$out" 2>&1 &
  lpid=$!; pids+=($lpid)
}
follower() { # follower <out> <args...>
  local out=$1; shift
  "$sp" follower --key F.key --pairing p.txt --log F.db --snapshot-delay 40 "$@" > "$out" 2>&1 &
  fpid=$!; pids+=($fpid)
}
start=$(date +%s)

echo "1. F syncs to 5000 and stops; the leader writes on to 20000, prunes through 6000"
leader L1.out --rate 100000 --until 5000 --exit-when-synced --timeout 60
follower F0.out --exit-at 5000 --timeout 60
wait $fpid || fail "F did not sync to 5000"
wait $lpid || fail "first leader"
[ "$(latest F.db)" = 5000 ] || fail "F at $(latest F.db), expected 5000"
leader L2.out --rate 100000 --until 20000 --timeout 120
wait_latest L.db 20000 60 || fail "the leader did not write 20000"
"$sp" prune --log L.db --through 6000 > prune.out 2>&1 || fail "prune"
grep -q "^pruned through 6000, 14000 entries kept$" prune.out || fail "prune: $(cat prune.out)"
"$sp" prune --log L.db --through 99999 > /dev/null 2>&1; [ $? = 2 ] || fail "prune past the latest entry: expected exit 2"
"$sp" prune --log L.db > /dev/null 2>&1; [ $? = 2 ] || fail "prune without --through/--keep: expected exit 2"
"$sp" prune --help | grep -q "usage: spsync prune" || fail "prune --help"
want=$("$sp" status --log L.db --by-origin --pairing p.txt) || fail "by-origin L"
[ "$want" = "entries by origin: L 20000, F 0" ] || fail "pruned leader counts '$want'"

echo "2. F comes back, recovers by snapshot, is killed after some chunks"
follower F1.out --timeout 60
wait_chunks F1.out 5 20 || fail "F1 shows no snapshot progress"
kill -9 $fpid; wait $fpid 2>/dev/null
k1=$(chunks F1.out); n=$(total_chunks F1.out)
[ "$k1" -lt "$n" ] || fail "the transfer finished before the cut ($k1 of $n)"
[ "$(latest F.db)" = 5000 ] || fail "F's log changed before the install: $(latest F.db)"
echo "  cut at $k1 of $n chunks; F's log still at 5000"

echo "3. F resumes; the leader is killed and restarted midway; F resumes again"
follower F2.out --exit-at 21000 --timeout 60
wait_chunks F2.out $((k1 + 5)) 20 || fail "F2 did not go on past $k1 chunks"
k2=$(chunks F2.out)
[ "$k2" -lt "$n" ] || fail "the transfer finished before the leader's cut ($k2 of $n)"
kill -9 $lpid; wait $lpid 2>/dev/null
ls L.db-snapshots/*.snap > /dev/null 2>&1 || fail "no .snap file kept for a restarted leader"
echo "  leader killed at $k2 of $n chunks"
sleep 0.5
leader L3.out --rate 2000 --until 21000 --exit-when-synced --timeout 60
wait $fpid || fail "F did not recover and follow to 21000"
wait $lpid || fail "restarted leader"
line=$(grep '^snapshot: ' F2.out)
[ "$(grep -c '^snapshot: ' F2.out)" = 1 ] || fail "F2 printed $(grep -c '^snapshot: ' F2.out) snapshot lines"
echo "  $line"
resumed=$(sed -n 's/^snapshot: [0-9]* bytes in [0-9]* chunks, resumed \([0-9]*\) times$/\1/p' F2.out)
[ -n "$resumed" ] || fail "F2's snapshot line: '$line'"
[ "$resumed" -ge 2 ] || fail "F2 resumed $resumed times: the follower's and the leader's restart each must resume"
grep -q "^snapshot: [0-9]* bytes in $n chunks" F2.out || fail "F2's line names other than $n chunks"
grep -q "restarted [1-9]" F2.out && fail "F2 restarted a snapshot from chunk 0"
a=$("$sp" status --log L.db --digest) || fail "status L"
b=$("$sp" status --log F.db --digest) || fail "status F"
[ "$a" = "$b" ] || fail "logs differ: L $a / F $b"
echo "  identical: $a"
for l in L F; do
  got=$("$sp" status --log $l.db --by-origin --pairing p.txt) || fail "by-origin $l: $got"
  [ "$got" = "entries by origin: L 21000, F 0" ] || fail "$l.db: '$got'"
done
echo "  entries by origin: L 21000 in both (pruned and installed logs count the whole history)"

echo "4. a failed recovery keeps the follower running; without snapshots: exit 3"
PAIRING=p4.txt leader L4.out --timeout 30
# Larger than the follower accepts: SNAPSHOT_FAILED, reported; the library
# retries after its backoff (minutes), the command runs on to --timeout.
"$sp" follower --key G.key --pairing p4.txt --log G.db --snapshot-max 1000 --timeout 3 > G0.out 2>&1
rc=$?
[ $rc = 4 ] || fail "follower with a failed recovery exited $rc, expected 4 (--timeout)"
grep -q "SP_ERR_SNAPSHOT_TOO_LARGE" G0.out || fail "G0 did not report the failure"
"$sp" follower --key G.key --pairing p4.txt --log G.db --no-snapshots --timeout 20 > G.out 2>&1
rc=$?
[ $rc = 3 ] || fail "follower --no-snapshots exited $rc, expected 3"
grep -q "requires a full sync" G.out || fail "G's message"
# The reason by name (issue 14), not a number.
grep -q "requires a full sync (SP_SYNC_BEHIND_RETENTION: " G.out || fail "G's reason"
[ "$(latest G.db)" = 0 ] || fail "G's log changed"
kill $lpid; wait $lpid 2>/dev/null
PAIRING=p4.txt leader L5.out --no-snapshots --timeout 30
"$sp" follower --key H.key --pairing p4.txt --log H.db --timeout 20 > H.out 2>&1
rc=$?
[ $rc = 3 ] || fail "follower of a leader without snapshots exited $rc, expected 3"
grep -q "serves no snapshot" H.out || fail "H's message"
kill $lpid; wait $lpid 2>/dev/null
echo "ok: recovery by snapshot over QUIC ($(( $(date +%s) - start )) s)"
