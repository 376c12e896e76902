#!/bin/sh
# daemons/systemd/enjin-ring0d.service passes `systemd-analyze verify` without a warning about
# the unit itself. verify also checks that ExecStart= names an executable, so the unit is tested
# with its ExecStart= binary replaced by the ring0d of the build tree.
# Usage: systemd_unit_test.sh RING0D   (exit 77: skipped, systemd-analyze not installed)
set -eu
ring0d=$1
unit="$(cd "$(dirname "$0")/../.." && pwd)/daemons/systemd/enjin-ring0d.service"
name=$(basename "$unit")

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "systemd_unit_test: SKIP: systemd-analyze is not installed"
  exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/enjin-unit.XXXXXX")
trap 'rm -rf "$dir"' EXIT
# Only the binary of ExecStart= changes; its flags stay as installed.
sed "s|^ExecStart=/usr/local/bin/ring0d |ExecStart=$ring0d |" "$unit" >"$dir/$name"
if ! grep -q "^ExecStart=$ring0d " "$dir/$name"; then
  echo "systemd_unit_test: FAIL: no 'ExecStart=/usr/local/bin/ring0d ' line in $unit"
  exit 1
fi

# Without a running systemd (a container, a build machine) verify still checks the syntax and
# every setting; SYSTEMD_LOG_LEVEL keeps it from hiding warnings.
rc=0
out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify "$dir/$name" 2>&1) || rc=$?
[ -n "$out" ] && printf '%s\n' "$out"
if [ "$rc" -ne 0 ]; then
  echo "systemd_unit_test: FAIL: systemd-analyze verify exited with $rc"
  exit 1
fi
# verify exits 0 on unknown or misspelt settings ("Unknown key name", "Invalid ..."): any line
# about this unit is a finding, whatever its wording.
if printf '%s\n' "$out" | grep -q -e "$name" -e "$dir"; then
  echo "systemd_unit_test: FAIL: systemd-analyze verify has something to say about $name"
  exit 1
fi
echo "systemd_unit_test: PASS"
