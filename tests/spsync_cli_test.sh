#!/bin/sh
# spsync's command line: --help everywhere, clear refusals for bad
# arguments and missing or unsafe files, key files created 0600.
set -u
sp=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
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

check 0 "usage: spsync" "$sp" --help
check 2 "usage: spsync" "$sp"
check 2 "unknown command" "$sp" frobnicate
for c in keygen fingerprint leader follower status; do
  check 0 "usage: spsync $c" "$sp" $c --help
done
check 2 "--out FILE is required" "$sp" keygen
check 2 "not a UUID" "$sp" keygen --out "$tmp/x.key" --device nope
check 0 "fingerprint sp1:" "$sp" keygen --out "$tmp/a.key"
[ "$(stat -c %a "$tmp/a.key")" = 600 ] || { echo "FAIL: key not 0600" >&2; fails=$((fails+1)); }
check 1 "file exists" "$sp" keygen --out "$tmp/a.key"
check 0 "public key" "$sp" fingerprint --key "$tmp/a.key"
check 0 "^device .* follower -" "$sp" fingerprint --key "$tmp/a.key" --pairing-line follower
chmod 644 "$tmp/a.key"
check 1 "group or others" "$sp" fingerprint --key "$tmp/a.key"
chmod 600 "$tmp/a.key"
check 1 "cannot load" "$sp" fingerprint --key "$tmp/missing.key"
check 2 "required" "$sp" leader --key "$tmp/a.key"
check 2 "non-negative" "$sp" leader --key k --pairing p --log l --rate -5
check 1 "cannot open pairing file" "$sp" leader --key "$tmp/a.key" --pairing "$tmp/none.txt" --log "$tmp/l.db"
printf 'library nope\n' > "$tmp/bad.txt"
check 1 "line 1" "$sp" follower --key "$tmp/a.key" --pairing "$tmp/bad.txt" --log "$tmp/l.db"
{ echo "library $(cat /proc/sys/kernel/random/uuid)"
  "$sp" fingerprint --key "$tmp/a.key" --pairing-line follower; } > "$tmp/noleader.txt"
check 1 "exactly one leader" "$sp" follower --key "$tmp/a.key" --pairing "$tmp/noleader.txt" --log "$tmp/l.db"
# One key per device id: a device listed twice (a copied key file, a
# reinstall), or one key under two ids, is refused naming both lines.
check 0 "-" "$sp" keygen --out "$tmp/b.key"
dev_a=$("$sp" fingerprint --key "$tmp/a.key" --pairing-line follower | awk '{print $2}')
key_a=$("$sp" fingerprint --key "$tmp/a.key" --pairing-line follower | awk '{print $3}')
key_b=$("$sp" fingerprint --key "$tmp/b.key" --pairing-line follower | awk '{print $3}')
lib=$(cat /proc/sys/kernel/random/uuid)
printf 'library %s\ndevice %s %s leader 127.0.0.1:1\n# the same id again\ndevice %s %s follower -\n' \
  "$lib" "$dev_a" "$key_a" "$dev_a" "$key_b" > "$tmp/dupid.txt"
check 1 "line 4: device $dev_a is already listed on line 2" "$sp" follower --key "$tmp/a.key" --pairing "$tmp/dupid.txt" --log "$tmp/d.db" --timeout 2
printf 'library %s\ndevice %s %s leader 127.0.0.1:1\ndevice %s %s follower -\n' \
  "$lib" "$dev_a" "$key_a" "$(cat /proc/sys/kernel/random/uuid)" "$key_a" > "$tmp/dupkey.txt"
check 1 "line 3: this key is already listed on line 2" "$sp" follower --key "$tmp/a.key" --pairing "$tmp/dupkey.txt" --log "$tmp/d.db" --timeout 2
check 1 "cannot open" "$sp" status --log "$tmp/none.db"
printf 'not a database' > "$tmp/junk.db"
check 1 "-" "$sp" status --log "$tmp/junk.db"
[ $fails -eq 0 ] && echo "ok: spsync command line"
exit $fails
