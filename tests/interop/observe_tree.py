#!/usr/bin/python3
"""An outside subscriber of a ring daemon's observation stream, written from proto/rings.md and
proto/envelope.md alone: verifies every message against the daemon's public key (peer.verify,
the receive checks in the documented order), then decodes `tree` and `tree_event` bodies.

    observe_tree.py ENDPOINT PUBLIC_KEY_HEX [--events N] [--timeout-ms MS]

Prints one line per event ("PATH: PREVIOUS -> STATE") and, for the first `tree`, one line per
node or process ("tree PATH STATE"). Exits 0 once it has a tree and N events, 3 on timeout,
1 on any message that fails verification.
"""
import argparse
import sys
import time

import zmq

from peer import Rejected, verify


def walk(node, prefix=""):
    for child in node.get("nodes", []):
        path = prefix + child["label"]
        yield path, child["state"]
        yield from walk(child, path + "/")
    for proc in node.get("processes", []):
        yield prefix + proc["name"], proc["state"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("key_hex")
    ap.add_argument("--events", type=int, default=1)
    ap.add_argument("--timeout-ms", type=int, default=10000)
    args = ap.parse_args()
    sock = zmq.Context().socket(zmq.SUB)
    sock.linger = 0
    sock.connect(args.endpoint)
    for prefix in (b"tree", b"event."):
        sock.subscribe(prefix)
    trusted = bytes.fromhex(args.key_hex)
    deadline = time.monotonic() + args.timeout_ms / 1000
    last_seq, have_tree, events = 0, False, 0
    while not have_tree or events < args.events:
        left = int((deadline - time.monotonic()) * 1000)
        if left <= 0 or not sock.poll(left):
            print(f"timed out: tree={have_tree} events={events}", file=sys.stderr)
            return 3
        try:
            msg = verify(sock.recv_multipart(), trusted, last_seq)
        except Rejected as e:
            print(f"rejected: {e.args[0]}: {e.args[1]}", file=sys.stderr)
            return 1
        last_seq = msg["seq"]
        body = msg["body"]
        if msg["type"] == "tree" and msg["topic"] == "tree" and not have_tree:
            have_tree = True
            print(f"tree root {body['label']} {body['state']}")
            for path, state in walk(body):
                print(f"tree {path} {state}")
        elif msg["type"] == "tree_event" and msg["topic"].startswith("event."):
            assert msg["topic"] == "event." + body["path"].replace("/", "."), msg["topic"]
            events += 1
            print(f"event {body['path']} ({body['kind']}): {body['previous']} -> {body['state']}"
                  f" pid {body['pid']} restarts {body['restarts']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
