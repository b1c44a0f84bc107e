#!/bin/bash
# Every device writes (issue 12), as three spsync processes over real UDP on
# 127.0.0.1 with real key files and SQLite logs: the leader generates
# entries, follower A writes a JSON lines file, follower B generates and is
# killed (SIGKILL) mid-run, then restarted to write the rest.  The
# followers start a second before the leader, so their first writes wait
# in their outboxes and B dies with proposals outstanding.  At the end:
#   - every process exited 0 and reports no refusal; the leader and A
#     committed all they submitted;
#   - each log counts, by origin device, exactly what that device
#     submitted (B: both runs; its first run's count is its outbox's next
#     origin, less one), with no origin id twice;
#   - the three logs are identical (digests over every row).
set -u
sp=$1
. "$(dirname "${BASH_SOURCE[0]}")/spsync_test_lib.sh"
N=3000
RATE=1000
TOTAL=$((3 * N))
"$sp" keygen --out B.key > /dev/null || fail keygen
{ echo "library $(cat /proc/sys/kernel/random/uuid)"
  "$sp" fingerprint --key L.key --pairing-line leader --address "127.0.0.1:$port" --name L
  "$sp" fingerprint --key F.key --pairing-line follower --name A
  "$sp" fingerprint --key B.key --pairing-line follower --name B; } > p.txt || fail pairing

# A's entries: every kind of change, text and hex payloads, some with
# their own record id and timestamp.
awk -v n=$N 'BEGIN {
  split("insert update delete bulk_insert", kinds, " ");
  for (i = 1; i <= n; i++) {
    if (i % 3 == 0)
      printf "{\"model_type\":\"photo\",\"change_type\":\"%s\",\"version\":%d,\"data_hex\":\"%08x\"}\n", kinds[i % 4 + 1], i, i;
    else if (i % 3 == 1)
      printf "{\"model_type\":\"tag\",\"record_id\":\"00000000-0000-4000-8000-%012d\",\"change_type\":\"%s\",\"version\":%d,\"timestamp_ms\":%d,\"data\":\"tag \\u00e9 %d\"}\n", i, kinds[i % 4 + 1], i, 1700000000000 + i, i;
    else
      printf "\n{ \"version\" : -%d, \"change_type\" : \"update\", \"model_type\" : \"album\" }\n", i;
  }
}' > A.jsonl

common="--pairing p.txt --timeout 120 --exit-at $TOTAL"
"$sp" follower --key F.key --log A.db $common --input A.jsonl --rate $RATE > A.out 2>&1 &
apid=$!; pids+=($apid)
"$sp" follower --key B.key --log B.db $common --rate $RATE --count $N > B1.out 2>&1 &
bpid=$!; pids+=($bpid)
sleep 1
"$sp" leader --key L.key --log L.db $common --rate $RATE --count $N --exit-when-synced > L.out 2>&1 &
lpid=$!; pids+=($lpid)

sleep 0.5
kill -9 $bpid; wait $bpid 2>/dev/null
b1=$("$sp" status --log B.db | awk '/^outbox/ {print $NF - 1}')
pending=$("$sp" status --log B.db | awk '/^outbox/ {print $2}')
[ -n "$b1" ] && [ "$b1" -gt 0 ] && [ "$b1" -lt $N ] || fail "B submitted '$b1' before the kill: expected some, not all"
echo "  B killed after submitting $b1 ($pending not yet committed)"
sleep 1
"$sp" follower --key B.key --log B.db $common --rate $RATE --count $((N - b1)) > B2.out 2>&1 &
bpid=$!; pids+=($bpid)

wait $apid || fail "follower A"
wait $bpid || fail "follower B (restarted)"
wait $lpid || fail "leader"

grep -q "^leader: submitted $N, committed $N, refused 0$" L.out || fail "leader's writes line"
grep -q "^follower: submitted $N, committed $N, refused 0$" A.out || fail "A's writes line"
grep -q "^follower: submitted $((N - b1)), committed [0-9]*, refused 0$" B2.out || fail "B's writes line"
want="entries by origin: L $N, A $N, B $N"
first=
for l in L A B; do
  got=$("$sp" status --log $l.db --by-origin --pairing p.txt) || fail "$l.db: $got"
  [ "$got" = "$want" ] || fail "$l.db: '$got', expected '$want'"
  d=$("$sp" status --log $l.db --digest) || fail "status $l.db"
  [ -z "$first" ] && first=$d
  [ "$d" = "$first" ] || fail "logs differ: $d / $first"
done
for l in A B; do
  "$sp" status --log $l.db | grep -q "^outbox       0 pending" || fail "$l's outbox not empty"
done
echo "  $want"
echo "  identical: $first"

# An outbox smaller than a batch of input lines (3000 bytes: three 1000
# byte entries), and a malformed last line: the lines before it all go,
# a few at a time as the leader commits them, before the command fails.
port2=$((port + 1))
{ echo "library $(cat /proc/sys/kernel/random/uuid)"
  "$sp" fingerprint --key L.key --pairing-line leader --address "127.0.0.1:$port2" --name L
  "$sp" fingerprint --key F.key --pairing-line follower --name C; } > p2.txt || fail pairing2
pad=$(printf '%0999d' 0)
{ for i in $(seq 1 20); do
    printf '{"model_type":"t","change_type":"insert","version":%d,"data":"%s"}\n' $i "$pad"
  done
  echo '{"model_type":"t","change_type":"upsert","version":21}'; } > C.jsonl
"$sp" leader --key L.key --log L2.db --pairing p2.txt --timeout 60 > L2.out 2>&1 &
pids+=($!)
"$sp" follower --key F.key --log C.db --pairing p2.txt --timeout 60 --input C.jsonl --outbox-max 3000 > C.out 2>&1
[ $? = 1 ] || fail "follower C: expected exit 1"
grep -q 'C.jsonl: line 21: "change_type" must be' C.out || fail "C's bad line"
grep -q "^follower: submitted 20, " C.out || fail "C did not submit the 20 lines before the bad one"
echo "  20 entries through a 3000-byte outbox, then the bad line refused"
echo "ok: three writing processes over QUIC"
