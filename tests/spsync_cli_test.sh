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
# Writes: the input format is documented; a device line may carry a name.
check 0 "JSON lines input" "$sp" follower --help
check 0 "change_type" "$sp" leader --help
check 0 "entries by origin" "$sp" status --help
check 0 "^device .* follower - A$" "$sp" fingerprint --key "$tmp/a.key" --pairing-line follower --name A
check 2 "no spaces" "$sp" fingerprint --key "$tmp/a.key" --pairing-line follower --name "A B"
check 2 "non-negative" "$sp" follower --key k --pairing p --log l --count -1
# A malformed line stops the command before anything of it is submitted;
# the lines before it are in the outbox (no leader runs: 127.0.0.1:1).
lib=$(cat /proc/sys/kernel/random/uuid)
{ echo "library $lib"
  "$sp" fingerprint --key "$tmp/b.key" --pairing-line leader --address 127.0.0.1:1 --name L
  "$sp" fingerprint --key "$tmp/a.key" --pairing-line follower --name A; } > "$tmp/w.txt"
check 1 "cannot open .*none.jsonl" "$sp" follower --key "$tmp/a.key" --pairing "$tmp/w.txt" --log "$tmp/w.db" --input "$tmp/none.jsonl"
printf '%s
' '{"model_type":"tag","change_type":"insert","version":1,"data":"x"}' ''   '{"model_type":"tag","change_type":"upsert","version":2}'   '{"model_type":"tag","change_type":"insert","version":3}' > "$tmp/bad.jsonl"
check 1 "bad.jsonl: line 3: \"change_type\" must be" "$sp" follower --key "$tmp/a.key" --pairing "$tmp/w.txt" --log "$tmp/w.db" --input "$tmp/bad.jsonl" --timeout 5
check 0 "^outbox       1 pending" "$sp" status --log "$tmp/w.db"
check 1 "stdin: line 1: column 2: expected a string" sh -c "echo '{x}' | '$sp' follower --key '$tmp/a.key' --pairing '$tmp/w.txt' --log '$tmp/w.db' --input - --timeout 5"
check 0 "^outbox       1 pending" "$sp" status --log "$tmp/w.db"
# A leader alone writes what it reads on standard input and counts it.
{ echo "library $lib"
  "$sp" fingerprint --key "$tmp/b.key" --pairing-line leader --address 127.0.0.1:0 --name L; } > "$tmp/l.txt"
check 0 "leader: submitted 3, committed 3, refused 0" sh -c "printf '%s\n' '{\"model_type\":\"a\",\"change_type\":\"delete\",\"version\":7}' '{\"model_type\":\"b\",\"change_type\":\"bulk_insert\",\"version\":8,\"data_hex\":\"00ff\"}' '{\"model_type\":\"c\",\"change_type\":\"update\",\"version\":9}' | '$sp' leader --key '$tmp/b.key' --pairing '$tmp/l.txt' --log '$tmp/ld.db' --input - --exit-when-synced --timeout 10"
check 0 "^entries by origin: L 3$" "$sp" status --log "$tmp/ld.db" --by-origin --pairing "$tmp/l.txt"
check 0 "^entries by origin: $("$sp" fingerprint --key "$tmp/b.key" --pairing-line leader | awk '{print $2}') 3$" "$sp" status --log "$tmp/ld.db" --by-origin
check 2 "with --digest or --by-origin" "$sp" status --log "$tmp/ld.db" --by-origin --digest
check 1 "cannot open" "$sp" status --log "$tmp/none.db"
# --pairing names the origins: it implies --by-origin.
check 0 "^entries by origin: L 3$" "$sp" status --log "$tmp/ld.db" --pairing "$tmp/l.txt"
check 2 "with --digest or --by-origin" "$sp" status --log "$tmp/ld.db" --pairing "$tmp/l.txt" --digest
# A file of the schema before the outbox: status says how to upgrade it.
python3 - "$tmp/s1.db" <<'PY' || { echo "FAIL: python3 schema 1" >&2; fails=$((fails+1)); }
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript('''
CREATE TABLE sync_log(sequence INTEGER PRIMARY KEY, device_id BLOB NOT NULL,
 timestamp INTEGER NOT NULL, model_type TEXT NOT NULL, record_id BLOB NOT NULL,
 change_type INTEGER NOT NULL, version INTEGER NOT NULL, data BLOB NOT NULL,
 hash BLOB NOT NULL);
CREATE TABLE sync_log_meta(id INTEGER PRIMARY KEY CHECK (id = 1),
 schema_version INTEGER NOT NULL, applied INTEGER NOT NULL,
 head_hash BLOB NOT NULL, epoch INTEGER NOT NULL,
 pruned_through INTEGER NOT NULL, pruned_hash BLOB NOT NULL);
INSERT INTO sync_log_meta VALUES(1, 1, 0, zeroblob(32), 0, 0, zeroblob(32));
PRAGMA application_id = 1397771335;
PRAGMA user_version = 1;''')
db.close()
PY
check 1 "older schema; open it once writable (spsync leader/follower) to upgrade" "$sp" status --log "$tmp/s1.db"
# Entries larger than a batch's share of a small outbox (1000 bytes each,
# a 10000-byte outbox, no leader): the outbox fills, exactly, then the
# command waits (here until its timeout); one entry larger than the whole
# outbox stops it with its line number.
pad=$(printf '%0999d' 0)
for i in $(seq 1 30); do
  printf '{"model_type":"t","change_type":"insert","version":%d,"data":"%s"}\n' $i "$pad"
done > "$tmp/big.jsonl"
check 4 "timed out" "$sp" follower --key "$tmp/a.key" --pairing "$tmp/w.txt" --log "$tmp/o.db" --input "$tmp/big.jsonl" --outbox-max 10000 --timeout 2
check 0 "^outbox       10 pending (10000 bytes)" "$sp" status --log "$tmp/o.db"
check 1 "big.jsonl: line 1: the entry's 1000 bytes are more than the outbox holds (999" "$sp" follower --key "$tmp/a.key" --pairing "$tmp/w.txt" --log "$tmp/o2.db" --input "$tmp/big.jsonl" --outbox-max 999 --timeout 5
check 2 "non-negative" "$sp" follower --key k --pairing p --log l --outbox-max 0
# Unread input on a pipe the writer does not want yet (--rate 1) must not
# spin the loop: a 3 s run uses well under a second of CPU.
cpu=$(bash -c "printf '%s\n' '{\"model_type\":\"a\",\"change_type\":\"delete\",\"version\":1}' '{\"model_type\":\"a\",\"change_type\":\"delete\",\"version\":2}' '{\"model_type\":\"a\",\"change_type\":\"delete\",\"version\":3}' '{\"model_type\":\"a\",\"change_type\":\"delete\",\"version\":4}' '{\"model_type\":\"a\",\"change_type\":\"delete\",\"version\":5}' | '$sp' follower --key '$tmp/a.key' --pairing '$tmp/w.txt' --log '$tmp/r.db' --input - --rate 1 --timeout 3 > /dev/null 2>&1; times" | tail -n 1 |
  awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); t += a[1] * 60 + a[2] } printf "%d", t * 1000 }')
[ "$cpu" -lt 1000 ] || { echo "FAIL: paced stdin used ${cpu} ms of CPU in 3 s" >&2; fails=$((fails+1)); }
# A FIFO as --input: opening it does not wait for a writer (the loop runs,
# the timeout works), and what a writer sends later is read.
mkfifo "$tmp/fifo"
check 4 "timed out" timeout -s KILL 20 "$sp" follower --key "$tmp/a.key" --pairing "$tmp/w.txt" --log "$tmp/f.db" --input "$tmp/fifo" --timeout 1
(sleep 1; printf '%s\n' '{"model_type":"f","change_type":"insert","version":1}' '{"model_type":"f","change_type":"insert","version":2}' > "$tmp/fifo") &
check 4 "timed out" timeout -s KILL 20 "$sp" follower --key "$tmp/a.key" --pairing "$tmp/w.txt" --log "$tmp/f.db" --input "$tmp/fifo" --timeout 3
wait
check 0 "^outbox       2 pending" "$sp" status --log "$tmp/f.db"
printf 'not a database' > "$tmp/junk.db"
check 1 "-" "$sp" status --log "$tmp/junk.db"
[ $fails -eq 0 ] && echo "ok: spsync command line"
exit $fails
