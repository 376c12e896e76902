#!/bin/sh
# The whole hierarchy on this machine: ring0d -> one ring-1 node -> two ring-2 nodes, each
# serving a small HTTP app on its own loopback port, from a fresh state dir.
# Usage: demo.sh BUILD_DIR [--duration S] [--keep]
#   without --duration: runs until Ctrl-C, which stops everything in order
#   --duration S: runs unattended for S seconds (a tour: kill an app, watch it come back), then
#                 stops everything and exits 0 if nothing was left behind
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
port1=$(free_port 18080)
port2=$(free_port $((port1 + 1)))

# The apps run as two tenants, each a uid of its own with its processes as another, when this
# runs as root: unix-user, the strongest strategy under which an app serves the host's loopback
# (a sandbox node has a network of its own until ring 1 hands it its listening socket). Not
# root: exec, as the user running the demo.
if [ "$(id -u)" = 0 ]; then
  strategy="unix-user"
  tenants='tenant_uids = "64000-64099"'
else
  strategy="exec"
  tenants=""
fi

cat >"$dir/ring0d.toml" <<EOF
# The enjin demo: one ring-1 node running two ring-2 nodes, each with a small HTTP app.
state_dir = "$state"
heartbeat_ms = 1000
heartbeat_timeout_ms = 5000

[[ring1]]
label = "infra-1"
$tenants

  [[ring1.ring2]]
  label = "shop"
  strategy = "$strategy"
  limits = { memory = "256M", processes = 128 }
    [[ring1.ring2.process]]
    name = "web"
    command = ["$bin/enjin-demo-http", "--port", "$port1", "--name", "shop"]
    readiness = "notify"
    health = { check = "http://127.0.0.1:$port1/healthz", interval_ms = 2000 }

  [[ring1.ring2]]
  label = "blog"
  strategy = "$strategy"
  limits = { memory = "256M", processes = 128 }
    [[ring1.ring2.process]]
    name = "web"
    command = ["$bin/enjin-demo-http", "--port", "$port2", "--name", "blog"]
    readiness = "notify"
    health = { check = "http://127.0.0.1:$port2/healthz", interval_ms = 2000 }
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

bold "the tenants: each ring-2 node's isolation is its DETAIL above ($strategy)"
echo "  the whole of it: $bin/enjinctl --state-dir $state status --json  (\"isolation\" of each node)"

bold "the apps"
echo "  shop  http://127.0.0.1:$port1/"
echo "  blog  http://127.0.0.1:$port2/"

bold "try, in another terminal"
cat <<EOF
  export ENJIN_STATE_DIR=$state
  $bin/enjinctl status                        # the tree
  $bin/enjinctl watch                         # every change, signatures verified
  $bin/enjinctl logs infra-1/shop/web -f      # an app's log
  kill -9 \$($bin/enjinctl pid infra-1/shop/web)  # kill an app; watch it come back
  kill -9 \$($bin/enjinctl pid infra-1)          # kill a whole ring; only it restarts
  $bin/enjinctl restart infra-1/blog/web      # a command down the tree, answered up it
EOF

if [ -z "$duration" ]; then
  bold "running; Ctrl-C stops everything"
  wait "$ring0d" || true
  ring0d=""
  stop_all
  exit 0
fi

# The unattended tour.
bold "tour: watching the stream while shop's web process is killed with SIGKILL"
"$bin/enjinctl" --state-dir "$state" watch --timeout-ms 4000 >"$dir/watch.log" 2>&1 &
watcher=$!
sleep 0.5
web=$($ctl pid infra-1/shop/web)
kill -9 "$web"
echo "killed shop/web (pid $web)"
wait "$watcher" || true
cat "$dir/watch.log"

# A ring-1 node's death: time until its replacement is ready, and nothing under it restarted.
ring1=$($ctl pid infra-1)
apps_before="$($ctl pid infra-1/shop/web) $($ctl pid infra-1/blog/web)"
bold "tour: ring1d (pid $ring1) killed with SIGKILL"
killed=$(now_ms)
kill -9 "$ring1"
while [ "$($ctl pid infra-1 2>/dev/null || echo "$ring1")" = "$ring1" ]; do sleep 0.01; done
$ctl wait-ready --timeout-ms 20000
echo "ring-1 node replaced and ready in $(( $(now_ms) - killed )) ms"
apps_after="$($ctl pid infra-1/shop/web) $($ctl pid infra-1/blog/web)"
echo "apps before: $apps_before; after: $apps_after (the same: re-adopted, not restarted)"
[ "$apps_before" = "$apps_after" ] || { echo "an app was restarted" >&2; exit 1; }
$ctl status

remaining=$((duration - ($(now_ms) - start) / 1000))
if [ "$remaining" -gt 0 ]; then
  bold "running for ${remaining}s more"
  sleep "$remaining" &
  wait $! || true
fi
stop_all
