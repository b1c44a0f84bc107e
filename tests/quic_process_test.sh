#!/bin/bash
# Leader and follower as separate processes (spsync) over real UDP on
# 127.0.0.1, with SQLite logs:
#   1. a follower 100,000 entries behind catches up;
#   2. a follower killed (SIGKILL) mid-stream and restarted resumes, with no
#      loss and no duplicate;
#   3. the leader killed and restarted: the follower reconnects by itself.
# Each ends with byte-identical logs: equal digests (the hash chain,
# recomputed over every row) and equal entry counts.
set -u
sp=$1
. "$(dirname "${BASH_SOURCE[0]}")/spsync_test_lib.sh"
pairing() {
  { echo "library $1"
    "$sp" fingerprint --key L.key --pairing-line leader --address "127.0.0.1:$port"
    "$sp" fingerprint --key F.key --pairing-line follower; } > "$2"
}
latest() { "$sp" status --log "$1" --digest 2>/dev/null | awk '{print $5}'; }
same_logs() {
  a=$("$sp" status --log "$1" --digest) || fail "status $1"
  b=$("$sp" status --log "$2" --digest) || fail "status $2"
  [ "$a" = "$b" ] || fail "logs differ: $1: $a / $2: $b"
  echo "  identical: $a"
}
leader() { # leader <pairing> <log> <args...>
  local p=$1 l=$2; shift 2
  "$sp" leader --key L.key --pairing "$p" --log "$l" --timeout 120 "$@" >> leader.out 2>&1 &
  lpid=$!; pids+=($lpid)
}
follower() {
  local p=$1 l=$2; shift 2
  "$sp" follower --key F.key --pairing "$p" --log "$l" --timeout 120 "$@" >> follower.out 2>&1 &
  fpid=$!; pids+=($fpid)
}
wait_for() { # wait_for <log> <seq> <seconds>
  local i
  for i in $(seq 1 $(($3 * 10))); do
    [ "$(latest "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

echo "1. catch-up of 100,000 entries"
pairing "$(cat /proc/sys/kernel/random/uuid)" p1.txt
leader p1.txt L1.db --rate 1000000 --until 100000 --payload 64 --exit-when-synced
wait_for L1.db 100000 60 || fail "leader did not write 100000 entries"
follower p1.txt F1.db --exit-at 100000
wait $fpid || fail "follower 1"
wait $lpid || fail "leader 1"
same_logs L1.db F1.db

echo "2. follower killed and restarted"
pairing "$(cat /proc/sys/kernel/random/uuid)" p2.txt
leader p2.txt L2.db --rate 5000 --until 30000 --exit-when-synced
follower p2.txt F2.db --exit-at 30000
sleep 2
kill -9 $fpid; wait $fpid 2>/dev/null
killed_at=$(latest F2.db)
echo "  follower killed at $killed_at"
sleep 1
follower p2.txt F2.db --exit-at 30000
wait $fpid || fail "follower 2"
wait $lpid || fail "leader 2"
same_logs L2.db F2.db

echo "3. leader killed and restarted"
pairing "$(cat /proc/sys/kernel/random/uuid)" p3.txt
leader p3.txt L3.db --rate 5000 --until 20000
follower p3.txt F3.db --exit-at 20000
sleep 1.5
kill -9 $lpid; wait $lpid 2>/dev/null
echo "  leader killed at $(latest L3.db), follower at $(latest F3.db)"
sleep 1
leader p3.txt L3.db --rate 5000 --until 20000 --exit-when-synced
wait $fpid || fail "follower 3 did not reconnect by itself"
wait $lpid || fail "leader 3"
same_logs L3.db F3.db
echo "ok: processes over QUIC"
