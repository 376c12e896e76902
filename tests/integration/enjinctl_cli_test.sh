#!/bin/sh
# enjinctl's keygen and bus commands as a user meets them: files, modes, messages, exit codes.
set -u
ctl=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail=0
check() {  # check NAME EXPECTED_RC ACTUAL_RC
  if [ "$2" -ne "$3" ]; then echo "FAIL: $1: exit $3, expected $2"; fail=1; else echo "ok: $1"; fi
}
contains() {  # contains NAME FILE TEXT
  if grep -qF -- "$3" "$2"; then echo "ok: $1"; else echo "FAIL: $1: '$3' not in:"; cat "$2"; fail=1; fi
}

"$ctl" keygen --out "$dir/a" >"$dir/out" 2>"$dir/err"; check "keygen" 0 $?
[ "$(stat -c %a "$dir/a.key")" = 600 ] && echo "ok: key mode 600" || { echo "FAIL: key mode"; fail=1; }
[ "$(cat "$dir/out")" = "$(cat "$dir/a.pub")" ] && echo "ok: prints the public key" || { echo "FAIL: stdout"; fail=1; }
"$ctl" keygen --out "$dir/a" >/dev/null 2>"$dir/err"; check "keygen refuses to overwrite" 1 $?
contains "overwrite message" "$dir/err" "a.key already exists; pass --force"
"$ctl" keygen --out "$dir/a" --force >/dev/null 2>&1; check "keygen --force" 0 $?

chmod 644 "$dir/a.key"
"$ctl" bus pub --connect "ipc://$dir/none" --key "$dir/a.key" --topic t --type x --wait-ms 0 \
  2>"$dir/err"; check "pub refuses a world-readable key" 1 $?
contains "mode message" "$dir/err" "has mode 0644"
chmod 600 "$dir/a.key"

"$ctl" bus pub --connect "ipc://$dir/none" --key "$dir/a.key" --topic t --type x --body '[1]' \
  2>"$dir/err"; check "pub refuses a non-object body" 2 $?
"$ctl" bus pub --connect "ipc://$dir/none" --key "$dir/a.key" --topic 'bad topic' --type x \
  --wait-ms 0 2>"$dir/err"; check "pub refuses an invalid topic" 1 $?
contains "topic message" "$dir/err" "invalid topic 'bad topic'"
"$ctl" bus sub --trust "$dir/a.pub" 2>/dev/null; check "sub without an endpoint" 2 $?
"$ctl" bus sub --bind "ipc://$dir/s" --connect "ipc://$dir/s" --trust "$dir/a.pub" 2>/dev/null
check "sub with both --bind and --connect" 2 $?
"$ctl" bus sub --bind "ipc://$dir/s" --trust "$dir/missing.pub" 2>"$dir/err"; check "sub with a missing trust file" 1 $?
contains "trust message" "$dir/err" "missing.pub"
"$ctl" bus sub --bind "ipc://$dir/s" --trust "$dir/a.pub" --timeout-ms 200 >/dev/null 2>&1
check "sub times out with 3" 3 $?
"$ctl" bus --help >"$dir/out" 2>&1; check "bus --help" 0 $?
contains "help lists pub" "$dir/out" "pub"

# One accepted message, one from an untrusted key: exit 0, one line out, one rejection.
"$ctl" keygen --out "$dir/m" >/dev/null
"$ctl" bus sub --bind "ipc://$dir/bus" --trust "$dir/a.pub" --count 1 --timeout-ms 10000 \
  >"$dir/sub.out" 2>"$dir/sub.err" &
sub=$!
"$ctl" bus pub --connect "ipc://$dir/bus" --key "$dir/m.key" --topic obs.x --type hello --wait-ms 5000 --drain-ms 200
"$ctl" bus pub --connect "ipc://$dir/bus" --key "$dir/a.key" --topic obs.x --type hello --body '{"n":7}' --wait-ms 5000
wait $sub; check "sub exits 0 after --count" 0 $?
contains "accepted line" "$dir/sub.out" '"topic":"obs.x","from":"'"$(cat "$dir/a.pub")"'"'
contains "accepted body" "$dir/sub.out" '"type":"hello","body":{"n":7}'
contains "rejection line" "$dir/sub.err" '{"rejected":"unknown_key"'
[ "$(wc -l <"$dir/sub.out")" -eq 1 ] && echo "ok: exactly one accepted line" || { echo "FAIL: line count"; fail=1; }

[ $fail -eq 0 ] && echo "enjinctl CLI: all checks passed"
exit $fail
