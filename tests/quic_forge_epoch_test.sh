#!/bin/bash
# One frame from a paired follower no longer deposes a leader (issue 16
# item 1), with spsync processes over real UDP on 127.0.0.1, real key
# files and SQLite logs.  The leader L (--epoch 3, --verbose) writes what
# the test feeds it through a FIFO; F is an honest follower; X, a
# follower of the pairing too, runs tests/forge_epoch, which sends L a
# Heartbeat with epoch 4 in three forms:
#   --no-claim    no leadership claim;
#   --self-claim  a claim signed by X itself (valid signature; X may not
#                 lead);
#   --bad-sig     a claim by S, a standby (which may lead), with one
#                 signature byte flipped.
# Each must be answered with SP_ERR_UNPROVEN_EPOCH within 1 s; after each,
# L still runs (before the fix it stepped down, reset every stream with
# 308 and exited at its next write), its log names the refusal (X and
# epoch 4) and no step-down, F's stream is not lost, F applies the
# entries L writes next (equal digests within a few seconds), and L's
# log still says epoch 3.  The control, S's claim unharmed, deposes L
# (exit 5): the three differ from a proof only in what makes them fail.
set -u
sp=$1
forge=$2
. "$(dirname "${BASH_SOURCE[0]}")/spsync_test_lib.sh" || exit 1
"$sp" keygen --out X.key > /dev/null && "$sp" keygen --out S.key > /dev/null || fail keygen
lib=$(cat /proc/sys/kernel/random/uuid)
# S is written as a follower and made a standby (a follower that may lead).
{ echo "library $lib"
  "$sp" fingerprint --key L.key --pairing-line leader --address "127.0.0.1:$port" --name L
  "$sp" fingerprint --key F.key --pairing-line follower --name F
  "$sp" fingerprint --key X.key --pairing-line follower --name X
  "$sp" fingerprint --key S.key --pairing-line follower --name S |
    sed 's/ follower / standby /'; } > p.txt || fail pairing
grep -q ' standby ' p.txt || fail "no standby line in the pairing file"
fid=$(awk '$NF == "F" {print $2}' p.txt)
xid=$(awk '$NF == "X" {print $2}' p.txt)
sid=$(awk '$NF == "S" {print $2}' p.txt)
[ -n "$fid" ] && [ -n "$xid" ] && [ -n "$sid" ] || fail "device ids"

latest() { "$sp" status --log "$1" --digest 2>/dev/null | awk '{print $5}'; }
epoch_of() { "$sp" status --log "$1" 2>/dev/null | awk '$1 == "epoch" {print $2}'; }
wait_latest() { # wait_latest <log> <seq> <seconds>
  local _
  for _ in $(seq 1 $(($3 * 10))); do
    [ "$(latest "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
n=0
append() { # append <count>: L writes <count> more entries
  local _
  for _ in $(seq 1 "$1"); do
    n=$((n + 1))
    echo "{\"model_type\":\"album\",\"change_type\":\"insert\",\"version\":$n,\"data\":\"entry $n\"}" >&3
  done
}
# L and F hold the same log (the digest covers every row's hash chain).
synced() { # synced <seq> <seconds>
  wait_latest L.db "$1" "$2" || fail "L did not write $1 entries (at $(latest L.db))"
  wait_latest F.db "$1" "$2" || fail "F did not apply $1 entries (at $(latest F.db))"
  a=$("$sp" status --log L.db --digest) || fail "status L"
  b=$("$sp" status --log F.db --digest) || fail "status F"
  [ "$a" = "$b" ] || fail "logs differ: L $a / F $b"
}
alive() { # alive <what>: L and F still run
  if ! kill -0 "$lpid" 2>/dev/null; then
    wait "$lpid"
    fail "$1: the leader exited with status $?"
  fi
  kill -0 "$fpid" 2>/dev/null || fail "$1: the honest follower exited"
}
start=$(date +%s)

mkfifo in.fifo
# Read-write: opening does not wait for L, and L never sees an end.
exec 3<> in.fifo
"$sp" leader --key L.key --pairing p.txt --log L.db --epoch 3 --verbose --input in.fifo > L.out 2>&1 &
lpid=$!; pids+=("$lpid")
"$sp" follower --key F.key --pairing p.txt --log F.db > F.out 2>&1 &
fpid=$!; pids+=("$fpid")
append 100
synced 100 20
[ "$(epoch_of L.db)" = 3 ] || fail "L's log is at epoch '$(epoch_of L.db)', expected 3"
echo "L and F at 100 entries, epoch 3"

for variant in no-claim self-claim bad-sig; do
  extra=()
  [ $variant = bad-sig ] && extra=(--claim-key S.key)
  lines=$(wc -l < L.out)
  "$forge" --key X.key --pairing p.txt --$variant "${extra[@]}" > X-$variant.out 2>&1
  rc=$?
  sed "s/^/  /" X-$variant.out
  # A deposed leader exits a moment after its streams reset.
  [ $rc = 0 ] || sleep 0.5
  alive "--$variant"
  [ $rc = 0 ] || fail "--$variant: forge_epoch exited $rc (not refused with SP_ERR_UNPROVEN_EPOCH within 1 s)"
  grep -q "Heartbeat with epoch 4$" X-$variant.out || fail "--$variant: the forgery did not carry epoch 4"
  # The refusal is logged, naming the peer and the epoch.
  new=$(tail -n +$((lines + 1)) L.out)
  echo "$new" | grep "$xid" | grep "epoch 4" | grep -q "leadership claim" ||
    fail "--$variant: L's log does not name the refusal of X's epoch 4: $new"
  # Each claim fails the check it was made for.
  case $variant in
  self-claim) echo "$new" | grep "by $xid from $xid" | grep -q "may not lead" ||
      fail "--$variant: L's log does not refuse X's own claim as 'may not lead'" ;;
  bad-sig) echo "$new" | grep "by $sid from $xid" | grep -q "signature does not verify" ||
      fail "--$variant: L's log does not refuse S's claim as 'signature does not verify'" ;;
  esac
  if echo "$new" | grep -qi "stepped down\|stepping down"; then
    fail "--$variant: L stepped down"
  fi
  # F's stream was left alone (a deposed leader resets every stream).
  if echo "$new" | grep -q "peer $fid lost"; then
    fail "--$variant: L lost F's stream"
  fi
  echo "$new" | grep "$xid" | grep "epoch 4" | sed "s/^/  L: /"
  append 50
  synced $n 5
  alive "--$variant, after syncing"
  [ "$(epoch_of L.db)" = 3 ] || fail "--$variant: L's log is at epoch '$(epoch_of L.db)'"
  echo "--$variant: refused; L leads at epoch 3, F synced to $n"
done
grep -qi "stepped down\|stepping down" L.out F.out && fail "a step-down was logged"

# The control: the same frame with S's claim unharmed (X relays a real
# proof) deposes L, which says who leads now and exits 5.
"$forge" --key X.key --pairing p.txt --valid-claim --claim-key S.key > X-valid.out 2>&1
rc=$?
sed "s/^/  /" X-valid.out
[ $rc = 0 ] || fail "--valid-claim: forge_epoch exited $rc (the proof was not taken)"
for _ in $(seq 1 50); do kill -0 "$lpid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$lpid" 2>/dev/null && fail "--valid-claim: L still runs"
wait "$lpid"; rc=$?
[ $rc = 5 ] || fail "--valid-claim: L exited $rc, expected 5 (stepped down)"
grep -q "stepped down: device $sid (S) leads at epoch 4" L.out ||
  fail "--valid-claim: L did not name S at epoch 4"
echo "--valid-claim: L stepped down for S at epoch 4 and exited 5"
echo "ok: three forged epochs refused, the leader stood; a real proof deposed it ($(( $(date +%s) - start )) s)"
