#!/bin/bash
# How soon real spsync processes on 127.0.0.1 replicate again after a
# leader crash or a healed partition (issue 17).
#
#   quic_recovery_test.sh SPSYNC restart-addr   [MAX_S]
#   quic_recovery_test.sh SPSYNC restart-noaddr [MAX_S]
#   quic_recovery_test.sh SPSYNC restart-nat [MAX_S]
#   quic_recovery_test.sh SPSYNC partition SECONDS [MAX_S]
#
# restart-*: two caught-up followers, listed with (addr) or without
#   (noaddr, the README's default) a listen address; the leader is killed
#   (SIGKILL) and started again, and writes one entry at once.  Measured:
#   from the restart's launch to the moment every follower has applied
#   that entry (each exits on it, --exit-at).
# restart-nat: as noaddr, with one follower behind tests/udp_relay.py,
#   which forgets its mappings while the leader is down, as a NAT does:
#   the restarted leader cannot reach the follower at the address it last
#   saw, so only the follower's own liveness check (the QUIC keep-alive)
#   brings it back.
# partition: one follower reaches the leader through tests/udp_relay.py,
#   which drops everything, both ways, for SECONDS from entry 10 on; the
#   leader writes 5 entries/s up to 20, so the partition swallows pushes
#   and then an idle link.  Measured: from the first datagram the relay
#   forwards after the heal to the follower applying the last entry the
#   leader had written at the heal.
#
# Prints "resume_s N" (partition: also "heal_first_s N", heal -> first
# datagram through, which the follower's reconnect backoff sets); with
# MAX_S, fails when N > MAX_S.  Either way the logs must end byte-identical
# (equal digests).  scripts/bench runs it without MAX_S
# (bench/recovery_bench.sh).
set -u
sp=$(readlink -f "$1")
scenario=$2
here=$(cd "$(dirname "$0")" && pwd)
case $scenario in
  partition) part_s=$3; max=${4:-} ;;
  restart-addr|restart-noaddr|restart-nat) max=${3:-} ;;
  *) echo "usage: $0 SPSYNC restart-addr|restart-noaddr|restart-nat|partition S [MAX_S]" >&2
     exit 2 ;;
esac
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
cd "$tmp" || exit 1
fail() {
  echo "FAIL: $*" >&2
  for f in *.out; do echo "--- $f"; tail -n 30 "$f"; done >&2
  exit 1
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
latest() { "$sp" status --log "$1" 2>/dev/null | awk '/^latest/ {print $2}'; }
wait_at_least() { # wait_at_least <log> <seq> <seconds>: poll every 50 ms
  local end v
  end=$(awk -v t="$(now)" -v s="$3" 'BEGIN {printf "%.3f", t + s}')
  while :; do
    v=$(latest "$1")
    [ -n "$v" ] && [ "$v" -ge "$2" ] && return 0
    awk -v t="$(now)" -v e="$end" 'BEGIN {exit !(t > e)}' && return 1
    sleep 0.05
  done
}
same_logs() {
  local a b
  a=$("$sp" status --log "$1" --digest | awk '{print $1, $5}') || fail "status $1"
  b=$("$sp" status --log "$2" --digest | awk '{print $1, $5}') || fail "status $2"
  [ "$a" = "$b" ] || fail "logs differ: $1: $a / $2: $b"
}
check_max() {
  echo "resume_s $1"
  if [ -n "$max" ] && awk -v v="$1" -v m="$max" 'BEGIN {exit !(v > m)}'; then
    fail "resumed after $1 s, the goal is $max s"
  fi
}

"$sp" keygen --out L.key > /dev/null || fail keygen
port=$((20000 + RANDOM % 40000))
lport=$port

restart() {
  local nf=2 i addr fpids=() left p t0 t pid rc laddr=$lport relay=
  local listen=(--listen "127.0.0.1:$lport")
  if [ "$scenario" = restart-nat ]; then
    nf=1
    laddr=$((lport + 1))
    python3 "$here/udp_relay.py" "$laddr" "$lport" > relay.out 2>&1 &
    relay=$!; pids+=("$relay")
  fi
  { echo "library $(cat /proc/sys/kernel/random/uuid)"
    "$sp" fingerprint --key L.key --pairing-line leader --address "127.0.0.1:$laddr"
    for i in $(seq 1 $nf); do
      "$sp" keygen --out "F$i.key" > /dev/null || fail keygen
      addr=()
      [ "$scenario" = restart-addr ] && addr=(--address "127.0.0.1:$((lport + 1 + i))")
      "$sp" fingerprint --key "F$i.key" --pairing-line follower "${addr[@]}"
    done; } > p.txt
  "$sp" leader --key L.key --pairing p.txt --log L.db "${listen[@]}" \
    --rate 1000 --until 20 --timeout 120 --verbose >> leader.out 2>&1 &
  lpid=$!; pids+=("$lpid")
  for i in $(seq 1 $nf); do
    "$sp" follower --key "F$i.key" --pairing p.txt --log "F$i.db" --exit-at 21 \
      --timeout 120 --verbose >> "follower$i.out" 2>&1 &
    fpids+=($!); pids+=($!)
  done
  for i in $(seq 1 $nf); do
    wait_at_least "F$i.db" 20 30 || fail "follower $i did not catch up to 20"
  done
  # Idle for a moment, as a caught-up follower is most of the time.
  sleep 1
  kill -9 $lpid; wait $lpid 2>/dev/null
  echo "leader killed at $(date +%T.%N)" >> leader.out
  [ -n "$relay" ] && kill -HUP $relay
  sleep 0.5
  t0=$(now)
  "$sp" leader --key L.key --pairing p.txt --log L.db "${listen[@]}" \
    --rate 1000 --until 21 --timeout 120 --verbose >> leader.out 2>&1 &
  lpid=$!; pids+=("$lpid")
  worst=0
  for i in $(seq 1 $nf); do
    wait -n -p pid "${fpids[@]}"
    rc=$?
    t=$(secs "$t0" "$(now)")
    [ $rc -eq 0 ] || fail "a follower exited $rc (4: its --timeout) $t s after the restart, without the new entry"
    echo "  follower (pid $pid) applied the new entry $t s after the restart"
    left=()
    for p in "${fpids[@]}"; do [ "$p" = "$pid" ] || left+=("$p"); done
    fpids=("${left[@]}")
    worst=$t
  done
  for i in $(seq 1 $nf); do same_logs L.db "F$i.db"; done
  check_max "$worst"
}

partition() {
  # The partition starts at entry 10; the leader writes on to 20 (2 s more,
  # lost), then the link is idle, as most links are most of the time.
  local rport=$((lport + 1)) until=20 t_heal t_first t_done heal_seq
  "$sp" keygen --out F.key > /dev/null || fail keygen
  { echo "library $(cat /proc/sys/kernel/random/uuid)"
    "$sp" fingerprint --key L.key --pairing-line leader --address "127.0.0.1:$rport"
    "$sp" fingerprint --key F.key --pairing-line follower; } > p.txt
  python3 "$here/udp_relay.py" "$rport" "$lport" > relay.out 2>&1 &
  pids+=($!); relay=$!
  "$sp" leader --key L.key --pairing p.txt --log L.db --listen "127.0.0.1:$lport" \
    --rate 5 --until $until --exit-when-synced --timeout $((part_s + 120)) \
    --verbose >> leader.out 2>&1 &
  lpid=$!; pids+=("$lpid")
  "$sp" follower --key F.key --pairing p.txt --log F.db --exit-at $until \
    --timeout $((part_s + 120)) --verbose >> follower.out 2>&1 &
  fpid=$!; pids+=("$fpid")
  wait_at_least F.db 10 30 || fail "the follower did not start replicating"
  kill -USR1 $relay
  sleep "$part_s"
  kill -USR2 $relay
  heal_seq=$(latest L.db)
  wait_at_least F.db "$heal_seq" 120 || fail "no resume within 120 s of the heal"
  t_done=$(now)
  t_first=$(awk '$1 == "first" {print $2; exit}' relay.out)
  [ -n "$t_first" ] || fail "nothing went through the relay after the heal"
  t_heal=$(awk '$1 == "heal" {print $2}' relay.out)
  echo "  healed at $t_heal, first datagram through at $t_first, follower" \
       "at $heal_seq at $t_done"
  echo "heal_first_s $(secs "$t_heal" "$t_first")"
  wait $fpid || fail "follower did not reach $until"
  wait $lpid || fail "leader did not see the follower synced"
  same_logs L.db F.db
  check_max "$(secs "$t_first" "$t_done")"
}

case $scenario in
  restart-*) restart ;;
  partition) partition ;;
esac
