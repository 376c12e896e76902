#!/bin/sh
# The PaaS on this machine, from a fresh state dir: ring0d -> one ring-1 node with its API and an
# HAProxy router -> two apps deployed through the API with enjinctl, each instance a tenant
# ring-2 node serving on a socket ring 1 bound for it.
# Usage: demo.sh BUILD_DIR [--duration S] [--keep]
#   without --duration: runs until Ctrl-C, which stops everything in order
#   --duration S: runs unattended (a tour under load: instances killed, a rolling restart,
#                 ring1d killed, every request counted), S seconds more, then stops everything
#                 and exits 0 if no request failed and nothing was left behind
#   --keep: leave the state dir (logs, keys, databases) for a look afterwards
set -eu
build=$(cd "$1" && pwd); shift
duration=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=${2:?--duration needs seconds}; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "demo: unknown argument '$1' (known: --duration S, --keep)" >&2; exit 2 ;;
  esac
done
bin="$build/bin"
dir=$(mktemp -d /tmp/enjin-demo.XXXXXX)
state="$dir/state"
ring0d=""

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
now_ms() { date +%s%3N; }

# A free loopback TCP port from 18080 on (ss is in iproute2, on every Debian).
free_port() {
  p=$1
  while ss -Htln "sport = :$p" 2>/dev/null | grep -q .; do p=$((p + 1)); done
  echo "$p"
}

# The apps' instances are tenants: each a ring-2 node with a uid pair of its own, in a sandbox.
if [ "$(id -u)" != 0 ]; then
  echo "demo: the PaaS demo runs each app instance as a tenant (uids of its own, a sandbox):" \
    "run it as root (sudo ./enjin demo)" >&2
  exit 1
fi
api_port=$(free_port 18480)
router_port=$(free_port 18080)
[ "$router_port" = "$api_port" ] && router_port=$(free_port $((api_port + 1)))
# The ring-1 node's first API user: a password made up for this run, given as its hash.
password="demo-$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')"
hash=$(printf '%s\n' "$password" | "$bin/enjinctl" hash-password --password-stdin)

cat >"$dir/ring0d.toml" <<EOF
# The enjin demo: one ring-1 node that runs apps behind its router.
state_dir = "$state"
heartbeat_ms = 1000
heartbeat_timeout_ms = 5000

[[ring1]]
label = "infra-1"
api_listen = "127.0.0.1:$api_port"
router_listen = "127.0.0.1:$router_port"
ports = "21000-21099"
tenant_uids = "64000-64099"
  [[ring1.admin]]
  user = "ops"
  password_hash = "$hash"
EOF

# Everything the demo started has the state dir on its command line or under it.
leftovers() {
  for p in /proc/[0-9]*; do
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "$dir" && echo "${p#/proc/}"
  done
  return 0
}

stop_all() {
  trap - INT TERM EXIT
  if [ -n "$ring0d" ] && kill -0 "$ring0d" 2>/dev/null; then
    bold "stopping: ring0d stops ring-1, which stops ring-2, which stops the apps"
    kill -TERM "$ring0d"
    wait "$ring0d" 2>/dev/null || true
  fi
  left=$(leftovers)
  if [ -n "$left" ]; then
    echo "left behind: $left" >&2
    return 1
  fi
  echo "every process stopped; nothing left behind"
  if [ "$keep" = 1 ]; then echo "state kept in $dir"; else rm -rf "$dir"; fi
}
# However the demo ends (Ctrl-C, a failed step under set -e, the end of the tour), the tree is
# stopped and checked.
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'rc=$?; stop_all || rc=1; exit $rc' EXIT

"$bin/ring0d" --check-config --config "$dir/ring0d.toml"
bold "starting ring0d (log: $state/ring0d.log)"
mkdir -p "$state" && chmod 700 "$state"
start=$(now_ms)
"$bin/ring0d" --config "$dir/ring0d.toml" >"$state/ring0d.log" 2>&1 &
ring0d=$!
ctl="$bin/enjinctl --state-dir $state"

# Ready when the whole tree says so: every node and process ready.
if ! $ctl wait-ready --timeout-ms 30000; then
  kill -0 "$ring0d" 2>/dev/null || { echo "ring0d exited; its log:" >&2; cat "$state/ring0d.log" >&2; }
  $ctl status >&2 || true
  exit 1
fi
ready=$(now_ms)
bold "the tree is up: cold start to all-ready in $((ready - start)) ms"
$ctl status

# The operator's side: enjinctl over the ring-1 API, its session kept in the demo's dir.
export XDG_CONFIG_HOME="$dir/config"
printf '%s\n' "$password" |
  "$bin/enjinctl" login --server "http://127.0.0.1:$api_port" --user ops --password-stdin
app="$bin/enjinctl app"
bold "deploying two apps through the ring-1 API"
$app deploy shop --cmd "$bin/enjin-demo-http --name shop" --instances 3 \
  --readiness http:/healthz --health http:/healthz --wait --timeout 60
$app deploy blog --cmd "$bin/enjin-demo-http --name blog" --instances 2 \
  --readiness http:/healthz --health http:/healthz --wait --timeout 60
$app ls
$ctl status

bold "the apps, through the router on 127.0.0.1:$router_port"
echo "  http://shop.localhost:$router_port/"
echo "  http://blog.localhost:$router_port/"
echo "  (or: curl -H 'Host: shop.localhost' http://127.0.0.1:$router_port/)"

bold "try, in another terminal"
cat <<EOF
  export ENJIN_STATE_DIR=$state XDG_CONFIG_HOME=$dir/config
  $bin/enjinctl app show shop                  # instances, ports, pids, roll-out
  $bin/enjinctl app scale shop 5               # more instances
  $bin/enjinctl app restart shop               # a rolling restart, one at a time
  $bin/enjinctl app logs shop -f               # every instance's log
  $bin/enjinctl watch                          # every change, signatures verified
  kill -9 \$($bin/enjinctl pid infra-1/shop-1/shop)   # kill an instance: no request fails
EOF

if [ -z "$duration" ]; then
  bold "running; Ctrl-C stops everything"
  wait "$ring0d" || true
  ring0d=""
  stop_all
  exit 0
fi

# The unattended tour: every step under load, every request counted.
load() { "$bin/enjin-demo-load" --port "$router_port" --host-header shop.localhost --seconds "$1"; }
failed=0
bold "tour: 6 s of requests to shop while an instance is SIGKILLed every 1.5 s"
load 6 >"$dir/load.out" 2>&1 &
loader=$!
for i in 1 2 3; do
  sleep 1.5
  pid=$($ctl pid "infra-1/shop-$i/shop")
  kill -9 "$pid"
  echo "killed shop-$i (pid $pid)"
done
wait "$loader" || failed=1
cat "$dir/load.out"

bold "tour: a rolling restart of shop under load"
load 10 >"$dir/load.out" 2>&1 &
loader=$!
sleep 1
$app restart shop --wait --timeout 60
wait "$loader" || failed=1
cat "$dir/load.out"
$app show shop

bold "tour: ring1d SIGKILLed under load (the router and the instances outlive it)"
ring1=$($ctl pid infra-1)
load 5 >"$dir/load.out" 2>&1 &
loader=$!
sleep 1
kill -9 "$ring1"
echo "killed ring1d (pid $ring1)"
wait "$loader" || failed=1
cat "$dir/load.out"
$ctl wait-ready --timeout-ms 20000
[ "$failed" = 0 ] || { echo "demo: requests failed during the tour" >&2; exit 1; }
echo "every request of the tour was answered 2xx"

remaining=$((duration - ($(now_ms) - start) / 1000))
if [ "$remaining" -gt 0 ]; then
  bold "running for ${remaining}s more"
  sleep "$remaining" &
  wait $! || true
fi
stop_all
