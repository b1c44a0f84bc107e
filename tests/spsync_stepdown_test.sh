#!/bin/bash
# Stepping down is not a crash (issue 16 item 2), with spsync processes over
# real UDP on 127.0.0.1, real key files and SQLite logs.  Devices: A (the
# leader, epoch 1), B (a standby: a follower that may lead) and F (a
# follower).  The copies of the pairing file follow docs/pairing.md,
# "Failover": before, every copy names A leader and B standby; B's copy
# for its term names B leader and A standby.
#   1. A and F write, F and then B (as a follower) sync; B starts as
#      leader at epoch 2 while A still writes.  A meets B (it dials B, B
#      refuses it with its signed claim) and exits 5 within seconds,
#      naming B and the epoch (before issue 16 a writing leader that
#      stepped down failed its next submission: exit 255, later 1).
#   2. The same with --follow-on-step-down: A follows B in the same
#      process.  A wrote past what B holds, so B tells it SyncRequired and
#      A recovers by snapshot; A's writes go on through its outbox, B
#      writes too; the logs end identical, with every write exactly once.
#      SIGTERM then: 0 (a follower's status).
#   3. A's copy lists B as a plain follower (it may not lead): A refuses
#      B's claim (--verbose names it), keeps leading and serving F.
#   4. The old leader comes back: B leads, F follows B; A restarts with
#      its old copy, in which B has no address.  A dials F, F refuses it
#      relaying B's claim, and A exits 5 naming B.
set -u
sp=$1
. "$(dirname "${BASH_SOURCE[0]}")/spsync_test_lib.sh"
# spsync_test_lib.sh made L.key (A's) and F.key.
"$sp" keygen --out B.key > /dev/null || fail keygen
lib=$(cat /proc/sys/kernel/random/uuid)
idof() { "$sp" fingerprint --key "$1" --pairing-line follower | awk '{print $2}'; }
idB=$(idof B.key)

# pairing <file> <base port> <A's role> <B's role> [B's address]: F is a
# follower; the addresses are ports base, base + 1, base + 2.
pairing() {
  { echo "library $lib"
    "$sp" fingerprint --key L.key --pairing-line "$3" --address "127.0.0.1:$2" --name A
    "$sp" fingerprint --key B.key --pairing-line "$4" --address "${5:-127.0.0.1:$(($2 + 1))}" --name B
    "$sp" fingerprint --key F.key --pairing-line follower --address "127.0.0.1:$(($2 + 2))" --name F
  } > "$1" || fail "pairing $1"
}
digest() { "$sp" status --log "$1" --digest 2>/dev/null; }
latest() { digest "$1" | awk '{print $5}'; }
wait_latest() { # wait_latest <log> <seq> <seconds>
  local i
  for i in $(seq 1 $(($3 * 10))); do
    [ "$(latest "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
wait_line() { # wait_line <file> <fixed string> <seconds>
  local i
  for i in $(seq 1 $(($3 * 10))); do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
wait_exit() { # wait_exit <pid> <seconds>: its status in $rc; 1 if it runs on
  local i
  for i in $(seq 1 $(($2 * 10))); do
    if ! kill -0 "$1" 2>/dev/null; then
      wait "$1"; rc=$?
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# before <scenario> <A's extra args...>: A leads at epoch 1 and writes 200
# entries (unless the extra arguments say otherwise), F writes 50 through
# it; F and then B (as a follower) sync 250 or more.  Leaves A running
# ($apid).
before() {
  local n=$1; shift
  "$sp" leader --key L.key --pairing "old$n.txt" --log "A$n.db" --rate 2000 --count 200 --verbose --timeout 60 "$@" > "A$n.out" 2>&1 &
  apid=$!; pids+=($apid)
  "$sp" follower --key F.key --pairing "old$n.txt" --log "F$n.db" --rate 500 --count 50 --exit-at 250 --timeout 30 > "F$n.out" 2>&1 ||
    fail "$n: F did not write and sync 250"
  "$sp" follower --key B.key --pairing "old$n.txt" --log "B$n.db" --exit-at 250 --timeout 30 > "Bf$n.out" 2>&1 ||
    fail "$n: B did not sync as a follower"
}
start=$(date +%s)
"$sp" leader --help | grep -q -- "--follow-on-step-down" || fail "leader --help lacks --follow-on-step-down"
"$sp" leader --help | grep -q "5 stepped down" || fail "leader --help lacks exit status 5"

echo "1. A meets B leading at epoch 2: stepped down, exit 5"
pairing old1.txt "$port" leader standby
pairing new1.txt "$port" standby leader
before 1 --rate 200 --count 1000000
# A standby follows until its own copy names it the leader.
"$sp" leader --key B.key --pairing old1.txt --log X.db > X.out 2>&1; rc=$?
[ $rc = 1 ] && grep -q "names this device a standby" X.out || fail "1: leader on a standby's copy: exit $rc"
t0=$(date +%s%N)
"$sp" leader --key B.key --pairing new1.txt --log B1.db --epoch 2 --verbose --timeout 60 > B1.out 2>&1 &
bpid=$!; pids+=($bpid)
wait_exit $apid 10 || fail "1: A still runs 10 s after B started leading at epoch 2"
ms=$((($(date +%s%N) - t0) / 1000000))
[ $rc = 5 ] || fail "1: A exited $rc, expected 5 (stepped down)"
grep -qx "spsync: stepped down: device $idB (B) leads at epoch 2" A1.out ||
  fail "1: A's stepped-down line"
grep -q "submit:" A1.out && fail "1: A's writes failed: $(grep submit: A1.out)"
kill -0 $bpid 2>/dev/null || fail "1: B did not keep leading"
kill $bpid; wait $bpid; rc=$?
[ $rc = 0 ] || fail "1: B exited $rc on SIGTERM"
echo "  A exited 5 after $ms ms: $(grep 'stepped down:' A1.out)"

echo "2. --follow-on-step-down: A follows B, writing on; the logs end identical"
base=$((port + 3))
pairing old2.txt $base leader standby
pairing new2.txt $base standby leader
before 2 --follow-on-step-down --rate 300 --count 600
"$sp" leader --key B.key --pairing new2.txt --log B2.db --epoch 2 --rate 1000 --count 100 --timeout 60 > B2.out 2>&1 &
bpid=$!; pids+=($bpid)
wait_line A2.out "spsync: following $idB at epoch 2" 10 || fail "2: A did not follow B"
grep -qx "spsync: stepped down: device $idB (B) leads at epoch 2" A2.out ||
  fail "2: A's stepped-down line"
wait_latest B2.db 750 20 || fail "2: B's log is at $(latest B2.db), expected 750 (600 by A, 100 by B, 50 by F)"
wait_latest A2.db 750 20 || fail "2: A, following B, is at $(latest A2.db), B at 750"
[ "$(digest A2.db)" = "$(digest B2.db)" ] || fail "2: logs differ: A $(digest A2.db) / B $(digest B2.db)"
for l in A B; do
  got=$("$sp" status --log $l"2.db" --by-origin --pairing old2.txt) || fail "2: by-origin $l"
  [ "$got" = "entries by origin: A 600, B 100, F 50" ] || fail "2: $l's log: '$got'"
done
grep -q "^snapshot: " A2.out || fail "2: A, ahead of B, did not recover by snapshot"
kill -0 $apid 2>/dev/null || fail "2: A, following, has exited"
kill $apid; wait $apid; rc=$?
[ $rc = 0 ] || fail "2: A (a follower now) exited $rc on SIGTERM, expected 0"
grep -q "^follower: applied 750$" A2.out || fail "2: A's last line"
kill $bpid; wait $bpid 2>/dev/null
echo "  identical: $(digest A2.db); $(grep '^snapshot: ' A2.out)"

echo "3. B may not lead in A's copy: A refuses its claim and keeps leading"
base=$((port + 6))
pairing old3.txt $base leader follower
pairing new3.txt $base standby leader
"$sp" leader --key L.key --pairing old3.txt --log A3.db --rate 100 --verbose --timeout 60 > A3.out 2>&1 &
apid=$!; pids+=($apid)
"$sp" follower --key F.key --pairing old3.txt --log F3.db --timeout 60 > F3.out 2>&1 &
fpid=$!; pids+=($fpid)
"$sp" leader --key B.key --pairing new3.txt --log B3.db --epoch 2 --verbose --timeout 60 > B3.out 2>&1 &
bpid=$!; pids+=($bpid)
wait_line A3.out "refused a leadership claim for epoch 2 by $idB" 10 || fail "3: A did not log the refused claim"
grep -F "refused a leadership claim for epoch 2 by $idB" A3.out | grep -q "may not lead" ||
  fail "3: the refusal does not say B may not lead"
sleep 2
kill -0 $apid 2>/dev/null || fail "3: A exited"
grep -q "stepped down" A3.out && fail "3: A stepped down"
f1=$(latest F3.db)
sleep 1.5
f2=$(latest F3.db)
[ -n "$f1" ] && [ -n "$f2" ] && [ "$f2" -gt "$f1" ] || fail "3: F stopped syncing from A ($f1, then $f2)"
kill $apid; wait $apid; rc=$?
[ $rc = 0 ] || fail "3: A exited $rc on SIGTERM"
kill $fpid $bpid; wait $fpid $bpid 2>/dev/null
echo "  A kept leading: F went from $f1 to $f2; $(grep -F 'refused a leadership claim' A3.out | head -n 1)"

echo "4. A comes back while B leads: F relays B's claim; A exits 5"
base=$((port + 9))
pairing old4.txt $base leader standby -
pairing new4.txt $base standby leader
"$sp" leader --key B.key --pairing new4.txt --log B4.db --epoch 2 --rate 1000 --count 50 --timeout 60 > B4.out 2>&1 &
bpid=$!; pids+=($bpid)
"$sp" follower --key F.key --pairing new4.txt --log F4.db --timeout 60 > F4.out 2>&1 &
fpid=$!; pids+=($fpid)
wait_latest F4.db 50 20 || fail "4: F did not follow B"
"$sp" leader --key L.key --pairing old4.txt --log A4.db --verbose --timeout 60 > A4.out 2>&1 &
apid=$!; pids+=($apid)
wait_exit $apid 10 || fail "4: A still runs 10 s after it started"
[ $rc = 5 ] || fail "4: A exited $rc, expected 5 (stepped down)"
grep -qx "spsync: stepped down: device $idB (B) leads at epoch 2" A4.out ||
  fail "4: A's stepped-down line"
# The claim came with F's refusal: A does not know where B is.
grep -q "SP_ERR_NOT_LEADER" A4.out || fail "4: F's refusal did not reach A"
kill -0 $fpid 2>/dev/null && kill -0 $bpid 2>/dev/null || fail "4: B or F exited"
kill $fpid $bpid; wait $fpid $bpid 2>/dev/null
echo "  $(grep 'stepped down:' A4.out)"
echo "ok: stepping down over QUIC ($(( $(date +%s) - start )) s)"
