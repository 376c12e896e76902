#!/usr/bin/python3
"""Interop of wire format v1 between enjinctl and peer.py, an independent Python implementation.

  interop_test.py PATH/TO/enjinctl

(a) peer.py signs, `enjinctl bus sub` verifies: 20 good messages are accepted as sent; one from an
    untrusted key is rejected as unknown_key, one tampered after signing as bad_signature.
(b) `enjinctl bus pub` signs, peer.py verifies, knowing only the public key from the .pub file.
(c) CURVE over tcp:// (proto/envelope.md section 1), peer.py the CURVE client both ways:
    `enjinctl bus pub --bind tcp://` admits py.pub: peer.py sub with py's curve keys gets the 20
    messages, a plaintext peer.py sub gets none; `enjinctl bus sub --bind tcp://` trusting py.pub
    gets peer.py pub's 20 messages over CURVE, while a stranger's key never gets a connection.
Exits 0 when all holds; otherwise prints every failed check and exits 1.
"""

import json
import os
import subprocess
import sys
import tempfile

PYTHON = "/usr/bin/python3"  # the interpreter with python3-zmq and python3-nacl
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer.py")
N = 20
STEP_TIMEOUT_S = 12  # per subprocess; the test as a whole stays well under 30 s

failures = []
started = []  # background processes, killed if a step ends early


def check(ok, what):
    if not ok:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)
    return ok


def run(cmd):
    """Runs a command to completion; returns (rc, stdout lines, stderr lines)."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    return p.returncode, p.stdout.splitlines(), p.stderr.splitlines()


def start(cmd):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started.append(proc)
    return proc


def finish(proc):
    """Waits for a started process; returns (rc, stdout lines, stderr lines)."""
    try:
        out, err = proc.communicate(timeout=STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n(killed after {STEP_TIMEOUT_S} s)"
    return proc.returncode, out.splitlines(), err.splitlines()


def read_line(path):
    with open(path) as f:
        return f.readline().strip()


def json_lines(lines, what):
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            check(False, f"{what}: not a JSON line: {line!r}")
    return out


def keygen(enjinctl, base):
    rc, out, err = run([enjinctl, "keygen", "--out", base])
    check(rc == 0, f"enjinctl keygen --out {base} exited {rc}: {err}")
    check(out == [read_line(base + ".pub")], f"keygen printed {out}, not the key in {base}.pub")


def python_to_enjinctl(enjinctl, tmp):
    """(a) peer.py publishes (connect), enjinctl bus sub verifies (bind)."""
    endpoint = f"ipc://{tmp}/up.ipc"
    topic = "obs.r2.interop"
    # peer.py signs with the seed enjinctl keygen wrote, so this also checks that both derive
    # the same public key from a .key file.
    seed = read_line(f"{tmp}/py.key")
    pub_hex = read_line(f"{tmp}/py.pub")
    sub = start([enjinctl, "bus", "sub", "--bind", endpoint, "--trust", f"{tmp}/py.pub",
                 "--count", str(N), "--timeout-ms", str(STEP_TIMEOUT_S * 1000 - 2000)])
    peer = [PYTHON, PEER, "pub", "--connect", endpoint, "--topic", topic]
    # The two bad ones go first: the sub exits after N accepted messages.
    stranger_seed = os.urandom(32).hex()
    for extra, what in ([["--seed-hex", stranger_seed], "untrusted key"],
                        [["--seed-hex", seed, "--tamper"], "tampered payload"]):
        rc, _, err = run(peer + extra + ["--count", "1"])
        check(rc == 0, f"peer.py pub ({what}) exited {rc}: {err}")
    rc, sent_lines, err = run(peer + ["--seed-hex", seed, "--count", str(N)])
    check(rc == 0, f"peer.py pub exited {rc}: {err}")
    sent = json_lines(sent_lines, "peer.py pub stdout")

    rc, out, err = finish(sub)
    check(rc == 0, f"enjinctl bus sub exited {rc}; stderr: {err}")
    got = json_lines(out, "enjinctl bus sub stdout")
    check(len(got) == N, f"enjinctl bus sub accepted {len(got)} messages, expected {N}")
    check(got == sent, f"enjinctl bus sub printed {got[:2]}..., peer.py sent {sent[:2]}...")
    check(all(m.get("from") == pub_hex and m.get("topic") == topic for m in got),
          "accepted messages do not all name py.pub's key and the topic")
    check([m.get("body") for m in got] == [{"n": i} for i in range(1, N + 1)],
          "bodies are not {n:1}..{n:20} in order")
    seqs = [m.get("seq") for m in got]
    check(seqs == list(range(seqs[0], seqs[0] + N)) if seqs else False,
          f"seqs are not consecutive: {seqs}")
    rejected = [line.get("rejected") for line in json_lines(err, "enjinctl bus sub stderr")]
    check(sorted(rejected) == ["bad_signature", "unknown_key"],
          f"rejections were {rejected}, expected one unknown_key and one bad_signature")


def enjinctl_to_python(enjinctl, tmp):
    """(b) enjinctl bus pub publishes (bind), peer.py verifies (connect)."""
    endpoint = f"ipc://{tmp}/down.ipc"
    topic = "spec.r2.interop"
    body = {"want": "running", "replicas": 2, "name": "caf\u00e9"}
    pub_hex = read_line(f"{tmp}/ctl.pub")  # the public half only: peer.py never sees ctl.key
    sub = start([PYTHON, PEER, "sub", "--connect", endpoint, "--trust-hex", pub_hex,
                 "--count", str(N), "--timeout-ms", str(STEP_TIMEOUT_S * 1000 - 2000)])
    rc, _, err = run([enjinctl, "bus", "pub", "--bind", endpoint, "--key", f"{tmp}/ctl.key",
                      "--topic", topic, "--type", "spec", "--body", json.dumps(body),
                      "--count", str(N), "--wait-ms", "5000", "--drain-ms", "3000"])
    check(rc == 0, f"enjinctl bus pub exited {rc}: {err}")
    rc, out, err = finish(sub)
    check(rc == 0, f"peer.py sub exited {rc}; stderr: {err}")
    got = json_lines(out, "peer.py sub stdout")
    check(len(got) == N, f"peer.py sub verified {len(got)} messages, expected {N}")
    check(all(m.get("topic") == topic and m.get("from") == pub_hex and m.get("type") == "spec"
              and m.get("body") == body for m in got),
          f"messages differ from what enjinctl sent: {got[:1]}")
    seqs = [m.get("seq") for m in got]
    check(seqs == list(range(seqs[0], seqs[0] + N)) if seqs else False,
          f"seqs are not consecutive: {seqs}")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curve_enjinctl_to_python(enjinctl, tmp):
    """(c1) enjinctl bus pub binds tcp:// (CURVE server); peer.py subscribes with and without."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    topic = "spec.r2.curve"
    ctl_hex = read_line(f"{tmp}/ctl.pub")
    py_seed = read_line(f"{tmp}/py.key")
    plain = start([PYTHON, PEER, "sub", "--connect", endpoint, "--trust-hex", ctl_hex,
                   "--count", "1", "--timeout-ms", "4000"])
    curve = start([PYTHON, PEER, "sub", "--connect", endpoint, "--trust-hex", ctl_hex,
                   "--curve-seed-hex", py_seed, "--curve-server-hex", ctl_hex,
                   "--count", str(N), "--timeout-ms", str(STEP_TIMEOUT_S * 1000 - 2000)])
    rc, _, err = run([enjinctl, "bus", "pub", "--bind", endpoint, "--key", f"{tmp}/ctl.key",
                      "--admit", f"{tmp}/py.pub", "--topic", topic, "--type", "spec",
                      "--count", str(N), "--interval-ms", "20", "--wait-ms", "5000",
                      "--drain-ms", "3000"])
    check(rc == 0, f"enjinctl bus pub --bind tcp:// exited {rc}: {err}")
    rc, out, err = finish(curve)
    check(rc == 0, f"peer.py sub over CURVE exited {rc}; stderr: {err}")
    got = json_lines(out, "peer.py sub (CURVE) stdout")
    check(len(got) == N and all(m.get("from") == ctl_hex and m.get("topic") == topic for m in got),
          f"peer.py sub over CURVE verified {len(got)} messages, expected {N} from ctl")
    rc, out, err = finish(plain)
    check(rc == 3 and not out, f"a plaintext peer.py sub exited {rc} with {out}: expected a timeout "
                               "and no message")
    # A tcp:// endpoint without the keys its side needs is an error, never plaintext.
    rc, _, err = run([enjinctl, "bus", "pub", "--connect", endpoint, "--key", f"{tmp}/ctl.key",
                      "--topic", topic, "--type", "spec", "--count", "1", "--wait-ms", "100"])
    check(rc != 0 and any("public key" in line for line in err),
          f"enjinctl bus pub --connect tcp:// without --server-key exited {rc}: {err}")


def curve_python_to_enjinctl(enjinctl, tmp):
    """(c2) enjinctl bus sub binds tcp:// (CURVE server) trusting py.pub; peer.py publishes."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    topic = "obs.r2.curve"
    ctl_hex = read_line(f"{tmp}/ctl.pub")
    py_seed = read_line(f"{tmp}/py.key")
    sub = start([enjinctl, "bus", "sub", "--bind", endpoint, "--key", f"{tmp}/ctl.key",
                 "--trust", f"{tmp}/py.pub", "--count", str(N),
                 "--timeout-ms", str(STEP_TIMEOUT_S * 1000 - 2000)])
    stranger = os.urandom(32).hex()
    rc, out, err = run([PYTHON, PEER, "pub", "--connect", endpoint, "--topic", topic,
                        "--seed-hex", stranger, "--curve-seed-hex", stranger,
                        "--curve-server-hex", ctl_hex, "--count", "1", "--wait-ms", "2000"])
    check(rc == 1, f"peer.py pub with an untrusted CURVE key exited {rc}: expected no subscriber")
    rc, sent_lines, err = run([PYTHON, PEER, "pub", "--connect", endpoint, "--topic", topic,
                               "--seed-hex", py_seed, "--curve-seed-hex", py_seed,
                               "--curve-server-hex", ctl_hex, "--count", str(N)])
    check(rc == 0, f"peer.py pub over CURVE exited {rc}: {err}")
    sent = json_lines(sent_lines, "peer.py pub (CURVE) stdout")
    rc, out, err = finish(sub)
    check(rc == 0, f"enjinctl bus sub --bind tcp:// exited {rc}; stderr: {err}")
    got = json_lines(out, "enjinctl bus sub (CURVE) stdout")
    check(got == sent and len(got) == N, f"enjinctl bus sub got {len(got)} of {N} over CURVE")
    rejected = [line.get("rejected") for line in
                json_lines([e for e in err if e.startswith("{")], "enjinctl bus sub stderr")]
    check(rejected == [], f"the stranger's messages reached the verifier: {rejected}")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: interop_test.py PATH/TO/enjinctl")
    enjinctl = os.path.abspath(sys.argv[1])
    # ipc:// paths are limited to ~107 bytes: keep the temp dir short.
    with tempfile.TemporaryDirectory(prefix="enjin-interop-", dir="/tmp") as tmp:
        keygen(enjinctl, f"{tmp}/py")
        keygen(enjinctl, f"{tmp}/ctl")
        for name, step in (("python -> enjinctl", python_to_enjinctl),
                           ("enjinctl -> python", enjinctl_to_python),
                           ("CURVE enjinctl -> python", curve_enjinctl_to_python),
                           ("CURVE python -> enjinctl", curve_python_to_enjinctl)):
            before = len(failures)
            try:
                step(enjinctl, tmp)
            except subprocess.TimeoutExpired as e:
                check(False, f"{e.cmd[:3]}... did not finish in {e.timeout} s")
            finally:
                for proc in started:
                    if proc.poll() is None:
                        proc.kill()
                        proc.communicate()
            print(f"{'ok  ' if len(failures) == before else 'FAIL'} {name}")
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
