#!/bin/bash
# What spsync shows about its links (issue 14 item 7): a follower that
# cannot reach its leader says so (state, the leader's name and address,
# the failed attempts, retrying or when it tries next) instead of "lag 0"; once connected it
# says to whom; a lost connection says so.  The leader's line shows each
# follower connected or not, with its lag.  About 15 s (a dial to nobody
# takes the QUIC handshake timeout, 10 s, to fail).
set -u
sp=$1
. "$(dirname "$0")/spsync_test_lib.sh"

wait_for() { # wait_for <file> <pattern> <seconds>
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    grep -q -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "$1 did not show '$2' within $3 s"
}

"$sp" pair init --library new --out p.txt > /dev/null || fail "pair init"
"$sp" pair add --pairing p.txt --key L.key --role leader \
  --address "localhost:$port" --name desk > /dev/null || fail "pair add L"
"$sp" pair add --pairing p.txt --key F.key --role follower --name f1 \
  > /dev/null || fail "pair add F"
at="desk at localhost:$port (127.0.0.1:$port)"

echo "1. no leader: connecting, then the failed attempt and retrying"
"$sp" follower --key F.key --pairing p.txt --log F.db --timeout 60 > F.out 2>&1 &
fpid=$!
pids+=($fpid)
wait_for F.out "^follower: applied 0, connecting to $at$" 5
wait_for F.out "^follower: applied 0, connecting to $at: could not reach the peer (SP_ERR_UNREACHABLE); 1 attempt failed, the last [0-9]* s ago; \(retrying\|next try now\|next try in [1-9][0-9]* s\)$" 20

echo "2. the leader comes: connected, and the leader shows the follower's lag"
"$sp" leader --key L.key --pairing p.txt --log L.db --rate 200 --count 400 > L.out 2>&1 &
lpid=$!
pids+=($lpid)
wait_for F.out "^follower: applied [0-9]*, lag [0-9]*, [0-9]* entries/s, connected to $at$" 20
wait_for L.out "^leader: latest 400, 1 follower stream(s), all acked up to 400; f1 connected lag 0$" 20

echo "3. the follower leaves: the leader shows it disconnected"
kill $fpid; wait $fpid 2>/dev/null
wait_for L.out "; f1 disconnected lag 0 (last ack [0-9]* s ago)$" 5

echo "4. the leader leaves: the follower says the connection is lost"
"$sp" follower --key F.key --pairing p.txt --log F.db --timeout 60 > F2.out 2>&1 &
fpid=$!
pids+=($fpid)
wait_for F2.out "connected to $at$" 20
kill $lpid; wait $lpid 2>/dev/null
wait_for F2.out "^follower: applied 400, connection to $at lost (.*) [0-9]* s ago; reconnecting\(; next try now\|; next try in [1-9][0-9]* s\)\{0,1\}$" 10

# Never a lag while not connected.
if grep -v "connected to" F.out F2.out | grep -q "lag"; then
  fail "a lag shown while not connected"
fi
echo "ok: spsync link display"
