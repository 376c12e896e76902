#!/bin/sh
# The signed bus at work, until the ring daemons exist: a subscriber that trusts one key, a
# publisher with that key, then a forged message and a stranger's message, both rejected.
# Usage: bus-demo.sh BUILD_DIR [--duration S]   (S bounds the whole demo; default 30)
set -eu
build=$1; shift
duration=30
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    *) echo "bus-demo: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
ctl="$build/bin/enjinctl"
peer="$(cd "$(dirname "$0")/../.." && pwd)/tests/interop/peer.py"
dir=$(mktemp -d /tmp/enjin-demo.XXXXXX)
sub=""
cleanup() { [ -n "$sub" ] && kill "$sub" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "keys: ring0 (trusted) and mallory (a stranger)"
"$ctl" keygen --out "$dir/ring0" >/dev/null
"$ctl" keygen --out "$dir/mallory" >/dev/null
echo "ring0   $(cat "$dir/ring0.pub")"
echo "mallory $(cat "$dir/mallory.pub")"
ls -l "$dir" | sed 1d

step "subscriber: trusts ring0 only, topics under obs.r2 (accepted on stdout, rejected on stderr)"
echo "\$ enjinctl bus sub --bind ipc://$dir/bus --trust ring0.pub --prefix obs.r2 --count 5"
"$ctl" bus sub --bind "ipc://$dir/bus" --trust "$dir/ring0.pub" --prefix obs.r2 --count 5 \
  --timeout-ms $((duration * 1000)) 2>&1 | tee "$dir/sub.log" | sed -u 's/^/  sub| /' &
sub=$!

step "a stranger publishes: rejected as unknown_key"
"$ctl" bus pub --connect "ipc://$dir/bus" --key "$dir/mallory.key" --topic obs.r2.web \
  --type heartbeat --body '{"claim":"I am ring0"}' --drain-ms 300
sleep 0.3

step "a forged message: ring0's key, payload changed after signing: rejected as bad_signature"
/usr/bin/python3 "$peer" pub --connect "ipc://$dir/bus" --seed-hex "$(cat "$dir/ring0.key")" \
  --topic obs.r2.web --count 1 --tamper >/dev/null
sleep 0.3

step "ring0 publishes 5 observations, 200 ms apart: all accepted"
"$ctl" bus pub --connect "ipc://$dir/bus" --key "$dir/ring0.key" --topic obs.r2.web \
  --type observation --body '{"node":"web","state":"running"}' --count 5 --interval-ms 200
wait "$sub" || true
sub=""
accepted=$(grep -c '^{"topic"' "$dir/sub.log" || true)
rejected=$(grep -c '^{"rejected"' "$dir/sub.log" || true)
step "done: $accepted accepted, $rejected rejected; every message was checked before it was read"
[ "$accepted" -eq 5 ] && [ "$rejected" -eq 2 ]
