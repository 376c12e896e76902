#!/bin/sh
# enjinctl against a real ring0d's control API on a loopback port: login, the credentials file
# and its mode, resource commands, --json output, exit codes, completion, logout.
set -u
ctl=$1
ring0d=$2
dir=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
fail=0
check() {  # check NAME EXPECTED_RC ACTUAL_RC
  if [ "$2" -ne "$3" ]; then echo "FAIL: $1: exit $3, expected $2"; cat "$dir/err" 2>/dev/null; fail=1; else echo "ok: $1"; fi
}
contains() {  # contains NAME FILE TEXT
  if grep -qF -- "$3" "$2"; then echo "ok: $1"; else echo "FAIL: $1: '$3' not in:"; cat "$2"; fail=1; fi
}
isjson() {  # isjson NAME FILE
  if /usr/bin/python3 -c 'import json,sys; json.load(sys.stdin)' <"$2"; then echo "ok: $1"; else echo "FAIL: $1: not JSON"; cat "$2"; fail=1; fi
}
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

export HOME="$dir/home" XDG_CONFIG_HOME="$dir/home/.config"
unset ENJIN_STATE_DIR ENJIN_SERVER
mkdir -p "$HOME"
port=$(free_port)
server="http://127.0.0.1:$port"
cat >"$dir/ring0d.toml" <<TOML
state_dir = "$dir/state"

[api]
listen = "127.0.0.1:$port"
TOML
printf 'correct-horse-battery' >"$dir/pw"
chmod 600 "$dir/pw"
"$ring0d" --config "$dir/ring0d.toml" --init --admin-password-file "$dir/pw" >"$dir/init.out" 2>&1
check "ring0d --init" 0 $?
"$ring0d" --config "$dir/ring0d.toml" >"$dir/ring0d.log" 2>&1 &
pid=$!
up=0
for _ in $(seq 1 100); do
  if /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then up=1; break; fi
  sleep 0.1
done
[ $up -eq 1 ] && echo "ok: ring0d serves the API" || { echo "FAIL: no API on $port"; cat "$dir/ring0d.log"; exit 1; }

creds="$XDG_CONFIG_HOME/enjin/credentials"
"$ctl" user list >/dev/null 2>"$dir/err"; check "not logged in" 5 $?
contains "not logged in message" "$dir/err" "enjinctl: not logged in"
echo wrong-password-123 | "$ctl" login --server "$server" --user admin --password-stdin >/dev/null 2>"$dir/err"
check "wrong password" 5 $?
contains "server message" "$dir/err" "enjinctl: wrong user or password"
[ ! -e "$creds" ] && echo "ok: no credentials after a failed login" || { echo "FAIL: credentials written"; fail=1; }

ENJIN_SERVER="$server" "$ctl" login --user admin --password-stdin <"$dir/pw" >"$dir/out" 2>"$dir/err"
check "login (server from ENJIN_SERVER)" 0 $?
[ "$(stat -c %a "$creds")" = 600 ] && echo "ok: credentials mode 600" || { echo "FAIL: credentials mode $(stat -c %a "$creds")"; fail=1; }
[ "$(stat -c %a "$XDG_CONFIG_HOME/enjin")" = 700 ] && echo "ok: credentials dir mode 700" || { echo "FAIL: dir mode"; fail=1; }

chmod 644 "$creds"
"$ctl" user list >/dev/null 2>"$dir/err"; check "a 0644 credentials file is refused" 1 $?
contains "refusal names the file" "$dir/err" "$creds"
contains "refusal says chmod 600" "$dir/err" "chmod 600"
chmod 600 "$creds"

echo 'bobs-password-long' | "$ctl" user create bob --password-stdin >"$dir/out" 2>"$dir/err"
check "user create" 0 $?
echo 'short' | "$ctl" user create carol --password-stdin >/dev/null 2>"$dir/err"
check "user create with a short password" 1 $?
contains "password policy message" "$dir/err" "enjinctl: user: "
"$ctl" user list >"$dir/out" 2>"$dir/err"; check "user list" 0 $?
contains "table header" "$dir/out" "NAME"
contains "bob listed" "$dir/out" "bob"
"$ctl" user list --json >"$dir/out" 2>"$dir/err"; check "user list --json" 0 $?
isjson "user list --json parses" "$dir/out"
"$ctl" user show bob >"$dir/out" 2>"$dir/err"; check "user show" 0 $?
contains "show names bob" "$dir/out" "name:"
"$ctl" user show bob --json >"$dir/out" 2>"$dir/err"; check "user show --json" 0 $?
isjson "user show --json parses" "$dir/out"
"$ctl" user show nobody >/dev/null 2>"$dir/err"; check "unknown user show" 4 $?
contains "not found message" "$dir/err" "enjinctl: "

"$ctl" rule-set create ops-rules --rule 'allow:nodes:*:*' --rule 'deny:nodes:delete:*' >/dev/null 2>"$dir/err"
check "rule-set create" 0 $?
"$ctl" rule-set show ops-rules --json >"$dir/out" 2>"$dir/err"; check "rule-set show" 0 $?
contains "rule parsed" "$dir/out" '"action": "nodes:delete"'
"$ctl" rule-set create bad --rule 'maybe:nodes:*:*' >/dev/null 2>"$dir/err"; check "a bad --rule" 2 $?
"$ctl" role create ops --rule-set ops-rules >/dev/null 2>"$dir/err"; check "role create" 0 $?
"$ctl" role create ghost --rule-set missing >/dev/null 2>"$dir/err"; check "role with a missing rule set" 1 $?
"$ctl" membership create --user bob --role ops -o json >"$dir/out" 2>"$dir/err"; check "membership create" 0 $?
isjson "membership create -o json parses" "$dir/out"
"$ctl" membership list >"$dir/out" 2>"$dir/err"; check "membership list" 0 $?
contains "membership listed" "$dir/out" "ops"
"$ctl" compartment create world >/dev/null 2>"$dir/err"; check "compartment create" 0 $?
"$ctl" compartment create eu --parent world >/dev/null 2>"$dir/err"; check "compartment with a parent" 0 $?
"$ctl" compartment list >"$dir/out" 2>"$dir/err"; check "compartment list" 0 $?
contains "parent shown" "$dir/out" "world"
"$ctl" role update ops --rule-set ops-rules >/dev/null 2>"$dir/err"; check "role update" 0 $?

"$ctl" node list --json >"$dir/out" 2>"$dir/err"; check "node list --json" 0 $?
isjson "node list --json parses" "$dir/out"
"$ctl" node show nosuch >/dev/null 2>"$dir/err"; check "unknown node show" 4 $?
# A node made through the API, with an admin for its own API, then deleted.
printf 'ring-one-operator\n' | "$ctl" hash-password --password-stdin >"$dir/hash" 2>"$dir/err"
check "hash-password" 0 $?
contains "an argon2id hash" "$dir/hash" '$argon2id$'
printf 'short\n' | "$ctl" hash-password --password-stdin >/dev/null 2>"$dir/err"; check "a short password" 1 $?
"$ctl" node create made --compartment eu --admin "ops:$(cat "$dir/hash")" >/dev/null 2>"$dir/err"
check "node create" 0 $?
"$ctl" node create bad --admin "nohash" >/dev/null 2>"$dir/err"; check "an --admin without a hash" 2 $?
"$ctl" node show made --json >"$dir/out" 2>"$dir/err"; check "node show" 0 $?
contains "made through the API" "$dir/out" '"source": "api"'
"$ctl" offer list >"$dir/out" 2>"$dir/err"; check "offer list" 0 $?
contains "the node's offer" "$dir/out" "made"
"$ctl" node delete made >/dev/null 2>"$dir/err"; check "node delete" 0 $?
"$ctl" node show made >/dev/null 2>"$dir/err"; check "a deleted node is gone" 4 $?
"$ctl" status >"$dir/out" 2>"$dir/err"; check "status over the API" 0 $?
contains "status table" "$dir/out" "STATE"
"$ctl" status --json >"$dir/out" 2>"$dir/err"; check "status --json over the API" 0 $?
isjson "status --json parses" "$dir/out"
"$ctl" audit --limit 5 --json >"$dir/out" 2>"$dir/err"; check "audit --json" 0 $?
isjson "audit --json parses" "$dir/out"
"$ctl" audit >"$dir/out" 2>"$dir/err"; check "audit" 0 $?
contains "audit records user creation" "$dir/out" "users:create"

"$ctl" membership delete bob:ops >/dev/null 2>"$dir/err"; check "membership delete" 0 $?
"$ctl" user delete bob >/dev/null 2>"$dir/err"; check "user delete" 0 $?
"$ctl" user show bob >/dev/null 2>"$dir/err"; check "deleted user is gone" 4 $?

"$ctl" user list --no-such-flag >/dev/null 2>"$dir/err"; check "a bad flag" 2 $?
"$ctl" --help >"$dir/out" 2>&1; check "--help" 0 $?
contains "help lists the exit codes" "$dir/out" "6 server unreachable"
"$ctl" completion bash >"$dir/comp.bash" 2>"$dir/err"; check "completion bash" 0 $?
bash -n "$dir/comp.bash" && echo "ok: completion passes bash -n" || { echo "FAIL: bash -n"; fail=1; }
contains "completion has subcommands" "$dir/comp.bash" '["enjinctl rule-set"]="'
contains "completion has flags" "$dir/comp.bash" '--password-stdin'
out=$(bash -c ". '$dir/comp.bash'; COMP_WORDS=(enjinctl rule-s); COMP_CWORD=1; _enjinctl; echo \"\${COMPREPLY[*]}\"")
[ "$out" = "rule-set" ] && echo "ok: completion completes a command" || { echo "FAIL: completion gave '$out'"; fail=1; }

"$ctl" logout >/dev/null 2>"$dir/err"; check "logout" 0 $?
[ ! -e "$creds" ] && echo "ok: logout removes the credentials" || { echo "FAIL: credentials left"; fail=1; }

# A server that is gone: connection refused.
dead=$(free_port)
"$ctl" login --server "http://127.0.0.1:$dead" --user admin --password-stdin <"$dir/pw" >/dev/null 2>"$dir/err"
check "dead server" 6 $?

[ $fail -eq 0 ] && echo "enjinctl API: all checks passed"
exit $fail
