#!/bin/bash
# recovery_bench.sh: how soon replication resumes after a leader crash or a
# healed partition, on real spsync processes over QUIC on 127.0.0.1.
#
# Each run is one scenario of tests/quic_recovery_test.sh (which says what
# it measures, and from which instant), without its pass/fail limit:
#   restart-addr    leader killed (SIGKILL) and restarted; two followers
#                   with a listen address: restart -> both applied a new entry
#   restart-noaddr  the same, followers without an address (the default)
#   restart-nat     the same, one follower behind a relay that forgets its
#                   mappings (a NAT): the leader cannot dial back
#   partition       one follower behind a UDP relay that drops everything
#                   for `partition` seconds: first datagram through after
#                   the heal -> the follower holds what the leader had
#
# Summary line (medians of `runs`; restart_resume_s is the slowest of the
# three restart medians):
#   recovery: restart_addr_s A restart_noaddr_s N restart_nat_s T
#             restart_resume_s R heal_resume_s H heal_first_s F
#             partition_s P runs K
# heal_first_s: heal -> first datagram through (the follower's reconnect
# backoff), for context.  A failed run prints why and is left out.
#
#   recovery_bench.sh SPSYNC [runs=3] [partition=10]
set -u
sp=$1
shift
runs=3
part=10
for a in "$@"; do
  case $a in
    runs=*) runs=${a#runs=} ;;
    partition=*) part=${a#partition=} ;;
    *) echo "usage: $0 SPSYNC [runs=N] [partition=S]" >&2; exit 2 ;;
  esac
done
test_sh="$(cd "$(dirname "$0")/.." && pwd)/tests/quic_recovery_test.sh"

median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "nan";
  else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

declare -A got
first=()
for i in $(seq 1 "$runs"); do
  for s in restart-addr restart-noaddr restart-nat "partition $part"; do
    # shellcheck disable=SC2086
    out=$(bash "$test_sh" "$sp" $s 2>&1)
    v=$(awk '$1 == "resume_s" {print $2}' <<<"$out")
    if [ -z "$v" ]; then
      echo "run $i $s: failed: $(grep -m1 FAIL <<<"$out")"
      continue
    fi
    got[$s]+="$v "
    if [ "${s%% *}" = partition ]; then
      first+=("$(awk '$1 == "heal_first_s" {print $2}' <<<"$out")")
      echo "run $i $s: resume_s $v heal_first_s ${first[-1]}"
    else
      echo "run $i $s: resume_s $v"
    fi
  done
done
a=$(tr ' ' '\n' <<<"${got[restart-addr]:-}" | grep . | median)
n=$(tr ' ' '\n' <<<"${got[restart-noaddr]:-}" | grep . | median)
t=$(tr ' ' '\n' <<<"${got[restart-nat]:-}" | grep . | median)
h=$(tr ' ' '\n' <<<"${got[partition $part]:-}" | grep . | median)
f=$(printf '%s\n' "${first[@]}" | grep . | median)
r=$(printf '%s\n' "$a" "$n" "$t" | sort -g | tail -n 1)
echo "recovery: restart_addr_s $a restart_noaddr_s $n restart_nat_s $t restart_resume_s $r" \
     "heal_resume_s $h heal_first_s $f partition_s $part runs $runs"
