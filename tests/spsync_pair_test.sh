#!/bin/bash
# spsync pair init/add writes the pairing file, refusing what the reader
# refuses; the reader refuses an over-long line by its number, reads a
# trailing comment as one and resolves host names; option errors name
# spsync and --help; the man page renders without warnings and names
# every command.  Usage: spsync_pair_test.sh <spsync> <spsync.1>
set -u
sp=$1
page=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
fails=0
check() { # check <expected status> <text expected in output|-> <command...>
  want=$1 text=$2
  shift 2
  out=$("$@" 2>&1)
  got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL: '$*' exited $got, expected $want: $out" >&2
    fails=$((fails + 1))
  elif [ "$text" != "-" ] && ! printf '%s' "$out" | grep -q -- "$text"; then
    echo "FAIL: '$*' output lacks '$text': $out" >&2
    fails=$((fails + 1))
  fi
}
same() { # same <file> <file>: unchanged by a refused command
  cmp -s "$1" "$2" || { echo "FAIL: $2 changed" >&2; fails=$((fails + 1)); }
}

for k in L F G; do "$sp" keygen --out $k.key > /dev/null || exit 1; done
lib=$(cat /proc/sys/kernel/random/uuid)

# pair init: a library line; never overwrites.
check 0 "^library $lib$" "$sp" pair init --library "$lib" --out p.txt
check 1 "the file exists" "$sp" pair init --library new --out p.txt
check 0 "^library [0-9a-f-]\{36\}$" "$sp" pair init --library new --out q.txt
check 2 "spsync: pair: init: --library: 'nope' is not a UUID.*(see spsync pair --help)" \
  "$sp" pair init --library nope --out r.txt
[ ! -e r.txt ] || { echo "FAIL: r.txt written" >&2; fails=$((fails + 1)); }
check 2 "(see spsync pair --help)" "$sp" pair init --out r.txt
check 2 "unknown subcommand 'frob'" "$sp" pair frob
check 0 "spsync pair add" "$sp" pair --help

# pair add: the leader from its key file, with a host name; a follower from
# the id and public key its own device printed.
check 0 "^device .* leader   localhost:7000 L$" \
  "$sp" pair add --pairing p.txt --key L.key --role leader --address localhost:7000 --name L
f_id=$("$sp" fingerprint --key F.key | awk '/^device/ {print $2}')
f_pk=$("$sp" fingerprint --key F.key | awk '/^public key/ {print $3}')
check 0 "^device $f_id $f_pk follower - F$" \
  "$sp" pair add --pairing p.txt --device "$f_id" --public-key "$f_pk" --role follower --name F
chmod 640 p.txt
cp p.txt before.txt
# Refused as the reader refuses: the file is left as it was.
check 1 "line 4 already names device .* the leader" \
  "$sp" pair add --pairing p.txt --key G.key --role leader
check 1 "device $f_id is already listed on line 5" \
  "$sp" pair add --pairing p.txt --key F.key --role standby
check 1 "this key is already listed on line 5" \
  "$sp" pair add --pairing p.txt --device "$(cat /proc/sys/kernel/random/uuid)" --public-key "$f_pk" --role follower
check 1 "bad address '127.0.0.1'" \
  "$sp" pair add --pairing p.txt --key G.key --role standby --address 127.0.0.1
check 1 "port 0-65535" \
  "$sp" pair add --pairing p.txt --key G.key --role standby --address 127.0.0.1:70000
check 2 "no spaces or '#'" "$sp" pair add --pairing p.txt --key G.key --role standby --name "a b"
check 2 "--role is leader, standby or follower" "$sp" pair add --pairing p.txt --key G.key --role boss
check 2 "give --key KEYFILE, or --device UUID and --public-key HEX" \
  "$sp" pair add --pairing p.txt --key G.key --device "$f_id" --role follower
check 2 "not 64 hex digits" "$sp" pair add --pairing p.txt --device "$f_id" --public-key abc --role follower
check 1 "no library line" "$sp" pair add --pairing /dev/null --key G.key --role follower
check 1 "cannot read" "$sp" pair add --pairing none.txt --key G.key --role follower
same before.txt p.txt
check 0 "standby  \[::1\]:7001 G$" \
  "$sp" pair add --pairing p.txt --key G.key --role standby --address '[::1]:7001' --name G
[ "$(stat -c %a p.txt)" = 640 ] || { echo "FAIL: mode not kept" >&2; fails=$((fails + 1)); }
[ "$(ls)" = "$(printf '%s\n' F.key G.key L.key before.txt p.txt q.txt)" ] ||
  { echo "FAIL: files left behind: $(ls)" >&2; fails=$((fails + 1)); }
grep -q '^# spsync pairing file' p.txt || { echo "FAIL: comment lost" >&2; fails=$((fails + 1)); }

# The file it wrote is complete: status names the devices from it.
"$sp" leader --key L.key --pairing p.txt --log l.db --listen 127.0.0.1:0 \
  --input /dev/null --exit-when-synced --timeout 1 > /dev/null 2>&1
check 0 "^entries by origin: L 0, F 0, G 0$" "$sp" status --log l.db --pairing p.txt

# The reader: an over-long line is refused by its number, not cut.
pad=$(printf '%0400d' 0)
{ echo "library $lib"
  echo "# $pad$pad"
  sed -n 's/^device/device/p' p.txt; } > long.txt
check 1 "long.txt: line 2: longer than 511 bytes" "$sp" status --log l.db --pairing long.txt
check 1 "long.txt: line 2: longer than 511 bytes" "$sp" pair add --pairing long.txt --key G.key --role follower
# 511 bytes are fine (the newline aside).
{ echo "library $lib"
  printf '#%0510d\n' 0
  grep '^device' p.txt; } > edge.txt
check 0 "^entries by origin: L 0, F 0, G 0$" "$sp" status --log l.db --pairing edge.txt
# Trailing comments after a space or tab; a '#' inside a word is a word.
{ echo "library $lib   # the office"
  grep '^device' p.txt | sed 's/$/ # a comment/; 2s/ # / \t#/'; } > c.txt
check 0 "^entries by origin: L 0, F 0, G 0$" "$sp" status --log l.db --pairing c.txt
{ echo "library $lib"
  grep '^device' p.txt | sed '1s/ L$/ L#x/'; } > h.txt
check 0 "^entries by origin: L#x 0, F 0, G 0$" "$sp" status --log l.db --pairing h.txt
{ echo "library $lib"
  grep '^device' p.txt | sed '1s/ L$/ L extra/'; } > x.txt
check 1 "x.txt: line 2: expected: device" "$sp" status --log l.db --pairing x.txt
{ echo "library $lib extra"; grep '^device' p.txt; } > x2.txt
check 1 "x2.txt: line 1: expected: library <uuid>" "$sp" status --log l.db --pairing x2.txt

# Concurrent pair add: the file is locked, so no line is lost; through a
# symlink the target is rewritten and the link kept.
cp p.txt conc.txt
ln -s conc.txt link.txt
for i in 1 2 3 4 5 6; do "$sp" keygen --out C$i.key > /dev/null || exit 1; done
for i in 1 2 3 4 5 6; do
  "$sp" pair add --pairing link.txt --key C$i.key --role follower > /dev/null &
done
wait
[ "$(grep -c '^device' conc.txt)" = $(( $(grep -c '^device' p.txt) + 6 )) ] ||
  { echo "FAIL: concurrent pair add lost a line" >&2; fails=$((fails + 1)); }
[ -L link.txt ] || { echo "FAIL: link.txt replaced" >&2; fails=$((fails + 1)); }

# Host names: a pairing address and --listen resolve (numeric to the
# library).  This device's own address (or --listen) must resolve; another
# device's name that does not is kept with a warning (resolved again when
# dialed), so a follower starts while its leader's name is unknown.
check 1 "cannot resolve 'no-such-host.invalid'" \
  "$sp" leader --key L.key --pairing p.txt --log l.db --listen no-such-host.invalid:1
sed 's/localhost:7000/no-such-host.invalid:7000/' p.txt > bad.txt
check 1 "bad.txt: line 4: this device's address: cannot resolve 'no-such-host.invalid'" \
  "$sp" leader --key L.key --pairing bad.txt --log l.db
check 4 "warning: bad.txt: line 4: cannot resolve 'no-such-host.invalid'.*(kept: resolved again when it is dialed)" \
  "$sp" follower --key F.key --pairing bad.txt --log f.db --timeout 1
check 4 "connecting to L at no-such-host.invalid:7000 (cannot resolve" \
  "$sp" follower --key F.key --pairing bad.txt --log f.db --timeout 2
# pair add writes a name this machine cannot resolve, with a warning.
cp bad.txt bad2.txt
"$sp" keygen --out N.key > /dev/null || exit 1
check 0 "warning: cannot resolve 'no-such-host.invalid'.*written anyway" \
  "$sp" pair add --pairing bad2.txt --key N.key --role standby --address no-such-host.invalid:7001
grep -q "standby  no-such-host.invalid:7001" bad2.txt ||
  { echo "FAIL: bad2.txt lacks the new line" >&2; fails=$((fails + 1)); }
# status reads the names alone: it resolves nothing.
check 0 "^entries by origin: L 0, F 0, G 0$" "$sp" status --log l.db --pairing bad.txt

# Option errors: prefixed with spsync, pointing to the command's --help.
for c in keygen fingerprint leader follower status prune "pair add"; do
  check 2 "^spsync: ${c% *}: unknown option '--frob' (see spsync ${c% *} --help)$" "$sp" $c --frob
done
check 2 "^spsync: leader: option '--key' needs a value (see spsync leader --help)$" "$sp" leader --key
# A short option is named by its letter, inside a cluster too (getopt has
# not moved past the word), and a long one without its "=value".
check 2 "^spsync: leader: unknown option '-x' (see spsync leader --help)$" "$sp" leader --key k -xy
check 2 "^spsync: leader: unknown option '-q' (see spsync leader --help)$" "$sp" leader -q
check 2 "^spsync: leader: unknown option '--frob' (see spsync leader --help)$" "$sp" leader --frob=1
check 2 "^spsync: follower: .*(see spsync follower --help)$" "$sp" follower --rate -1
check 2 "unknown command 'frob' (see spsync --help)" "$sp" frob

# The man page: renders without warnings, and documents every command of
# spsync --help, every option of every command's --help, and the exit
# statuses 5 (leader) and 3/4.
if command -v groff > /dev/null; then
  warn=$(LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z "$page" 2>&1)
  [ -z "$warn" ] || { echo "FAIL: groff: $warn" >&2; fails=$((fails + 1)); }
  text=$(LC_ALL=C.UTF-8 groff -man -Tutf8 -P-c -P-b -P-u "$page" 2>/dev/null)
else
  # No groff here: the page's own text, escapes undone.
  text=$(sed 's/\\-/-/g; s/\\f[BIRP]//g' "$page")
fi
for c in $("$sp" --help | awk '/^  [a-z]/ {print $1}'); do
  printf '%s' "$text" | grep -q "spsync $c" ||
    { echo "FAIL: man page lacks command $c" >&2; fails=$((fails + 1)); }
  for o in $("$sp" $c --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
    printf '%s' "$text" | grep -q -- "$o" ||
      { echo "FAIL: man page lacks $c $o" >&2; fails=$((fails + 1)); }
  done
done
printf '%s' "$text" | grep -q "stepped down: a newer leader was proven" ||
  { echo "FAIL: man page lacks exit status 5" >&2; fails=$((fails + 1)); }

[ $fails -eq 0 ] && echo "ok: spsync pair, pairing file, man page"
exit $fails
