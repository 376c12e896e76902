#!/usr/bin/python3
"""An independent peer for enjin wire format v1 (proto/envelope.md), written from the document
and not from the C++ code, using only python3-zmq and python3-nacl. Run it with /usr/bin/python3.

  peer.py pub (--connect|--bind) EP --seed-hex HEX --topic T --count N [--type T] [--tamper]
      Waits for a subscriber, then signs and sends N messages with bodies {"n":1}..{"n":N}.
      Prints each message sent as a JSON line (topic, from, seq, ts, type, body).
      --tamper changes the payload after signing, so receivers must reject it (bad_signature).
  peer.py sub (--connect|--bind) EP --trust-hex HEX --count N --timeout-ms MS
      Receives N messages, verifies each as a v1 receiver must and prints it as a JSON line
      (topic, from, seq, ts, type, body), the line `enjinctl bus sub` prints.

  Both, with --connect tcp://...: --curve-seed-hex HEX --curve-server-hex HEX make the socket a
  CurveZMQ client (proto/envelope.md section 1): its curve keypair is the one of the ed25519 seed
  HEX converted (crypto_sign_ed25519_sk_to_curve25519), the server's curve key that of the
  binding side's ed25519 public key (crypto_sign_ed25519_pk_to_curve25519). Without them a
  tcp:// enjin bus refuses the connection.

Exit codes, as enjinctl's: 0 done, 1 failure (stderr says why), 2 usage, 3 timeout.
"""

import argparse
import json
import re
import sys
import time

import nacl.bindings
import nacl.exceptions
import nacl.signing
import zmq

DOMAIN = b"enjin-v1\x00"  # signed bytes: DOMAIN + topic + b"\x00" + payload
FIELDS = ["v", "from", "seq", "ts", "type", "body"]  # the payload keys, in the sender's order
WINDOW_MS = 30_000
MAX_PAYLOAD = 1 << 20
MAX_DEPTH = 32  # nested objects and arrays, the payload object included
HEX_KEY = re.compile("[0-9a-fA-F]{64}")
EXIT_FAILURE, EXIT_TIMEOUT = 1, 3


def now_ms():
    return time.time_ns() // 1_000_000


def valid_topic(topic: bytes) -> bool:
    return (0 < len(topic) <= 255 and all(0x21 <= c <= 0x7E for c in topic)
            and all(topic.split(b".")))


def encode_payload(from_hex, seq, ts, type_, body) -> bytes:
    doc = {"v": 1, "from": from_hex, "seq": seq, "ts": ts, "type": type_, "body": body}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def curve_client(sock, seed_hex, server_hex):
    """CURVE client keys from ed25519 ones, as proto/envelope.md section 1 fixes."""
    public, secret = nacl.bindings.crypto_sign_seed_keypair(bytes.fromhex(seed_hex))
    sock.curve_publickey = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public)
    sock.curve_secretkey = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(secret)
    sock.curve_serverkey = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(
        bytes.fromhex(server_hex))


def open_socket(ctx, kind, args):
    sock = ctx.socket(kind)
    if args.curve_seed_hex or args.curve_server_hex:
        if not (args.curve_seed_hex and args.curve_server_hex and args.connect):
            sys.exit("peer: CURVE needs --connect, --curve-seed-hex and --curve-server-hex")
        curve_client(sock, args.curve_seed_hex, args.curve_server_hex)
    if args.bind:
        sock.bind(args.bind)
    else:
        sock.connect(args.connect)
    return sock


def run_pub(args) -> int:
    key = nacl.signing.SigningKey(bytes.fromhex(args.seed_hex))  # the 32-byte seed
    from_hex = key.verify_key.encode().hex()
    topic = args.topic.encode()
    if not valid_topic(topic):
        sys.exit(f"peer pub: invalid topic {args.topic!r}")
    ctx = zmq.Context()
    # XPUB rather than PUB: it tells us when a subscription arrives. Anything sent before that
    # is dropped by ZeroMQ, as pub/sub does.
    sock = open_socket(ctx, zmq.XPUB, args)
    sock.linger = 2000  # on close, flush what is queued for the connected subscriber
    if not sock.poll(args.wait_ms, zmq.POLLIN):
        print(f"peer pub: no subscriber after {args.wait_ms} ms", file=sys.stderr)
        return EXIT_FAILURE
    sock.recv()  # b"\x01" + prefix: a subscription

    # Seq: at least the wall clock in microseconds, +1 per message. (A long-lived sender also
    # keeps a reservation file so a restart never reuses a seq; this one-shot peer does not.)
    seq = time.time_ns() // 1000
    for n in range(1, args.count + 1):
        msg = {"topic": args.topic, "from": from_hex, "seq": seq, "ts": now_ms(),
               "type": args.type, "body": {"n": n}}
        payload = encode_payload(from_hex, seq, msg["ts"], args.type, msg["body"])
        signature = key.sign(DOMAIN + topic + b"\x00" + payload).signature
        if args.tamper:
            payload = encode_payload(from_hex, seq, msg["ts"], args.type, {"n": n + 1})
        sock.send_multipart([topic, payload, key.verify_key.encode() + signature])
        print(json.dumps(msg, separators=(",", ":")), flush=True)
        seq += 1
    sock.close()
    ctx.term()  # returns once the queue is flushed or the linger ran out
    return 0


class Rejected(Exception):
    """A message a v1 receiver must drop; args[0] is the rejection name of proto/envelope.md."""


def no_constants(name):
    raise Rejected("malformed", f"{name} is not JSON")


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Rejected("malformed", "duplicate key in payload")
    return dict(pairs)


def depth(x):
    if isinstance(x, (dict, list)):
        return 1 + max(map(depth, x.values() if isinstance(x, dict) else x), default=0)
    return 0


def is_int(x):
    return type(x) is int  # bool is an int subclass in Python; JSON true is not a number


def verify(frames, trusted: bytes, last_seq: int) -> dict:
    """The receive checks, in the order the document fixes. Returns the accepted message."""
    if len(frames) != 3:
        raise Rejected("malformed", f"{len(frames)} frames, expected 3")
    topic, payload, auth = frames
    if len(topic) > 255 or len(payload) > MAX_PAYLOAD:
        raise Rejected("oversize", "topic or payload too large")
    if len(auth) != 96 or not valid_topic(topic):
        raise Rejected("malformed", "auth size or topic")
    key, signature = auth[:32], auth[32:]
    if key != trusted:
        raise Rejected("unknown_key", key.hex())
    try:
        nacl.signing.VerifyKey(key).verify(DOMAIN + topic + b"\x00" + payload, signature)
    except nacl.exceptions.BadSignatureError:
        raise Rejected("bad_signature", "signature does not verify") from None
    # Only now, with the signature good, is the payload parsed.
    try:
        doc = json.loads(payload.decode("utf-8"), object_pairs_hook=no_duplicates,
                         parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Rejected("malformed", f"payload: {e}") from None
    if depth(doc) > MAX_DEPTH:
        raise Rejected("malformed", f"payload nested deeper than {MAX_DEPTH}")
    if not isinstance(doc, dict) or sorted(doc) != sorted(FIELDS):
        raise Rejected("malformed", "payload keys must be exactly " + ",".join(FIELDS))
    v, from_, seq, ts, type_, body = (doc[k] for k in FIELDS)
    if not (is_int(v) and isinstance(from_, str) and is_int(seq) and 0 <= seq < 1 << 64
            and is_int(ts) and -(1 << 63) <= ts < 1 << 63 and isinstance(type_, str) and type_
            and isinstance(body, dict)):
        raise Rejected("malformed", "payload fields missing or of the wrong type")
    if v != 1:
        raise Rejected("malformed", f"unsupported version {v}")
    # Senders write lowercase hex; receivers compare the key it decodes to.
    if not HEX_KEY.fullmatch(from_) or bytes.fromhex(from_) != key:
        raise Rejected("identity", "from names another key")
    if abs(ts - now_ms()) > WINDOW_MS:
        raise Rejected("stale", f"ts {ts} is outside the window")
    if seq <= last_seq:
        raise Rejected("replay", f"seq {seq} not above {last_seq}")
    # (acl: this peer trusts one key for every topic, so there is nothing more to check.)
    # Not a receive check: v1 senders write the keys in this order, and enjinctl must too.
    if list(doc) != FIELDS:
        raise Rejected("field_order", "the sender wrote the keys out of the documented order")
    return {"topic": topic.decode(), "from": from_, "seq": seq, "ts": ts, "type": type_,
            "body": body}


def run_sub(args) -> int:
    trusted = bytes.fromhex(args.trust_hex)
    ctx = zmq.Context()
    sock = open_socket(ctx, zmq.SUB, args)
    sock.linger = 0
    sock.subscribe(b"")  # everything; a prefix filter would be re-checked segment-wise
    deadline = time.monotonic() + args.timeout_ms / 1000
    last_seq = 0
    for _ in range(args.count):
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0 or not sock.poll(left_ms, zmq.POLLIN):
            print(f"peer sub: timed out after {args.timeout_ms} ms", file=sys.stderr)
            return EXIT_TIMEOUT
        try:
            msg = verify(sock.recv_multipart(), trusted, last_seq)
        except Rejected as e:
            print(json.dumps({"rejected": e.args[0], "detail": e.args[1]}), file=sys.stderr)
            return EXIT_FAILURE
        last_seq = msg["seq"]
        print(json.dumps(msg, separators=(",", ":")), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    pub = modes.add_parser("pub")
    pub.add_argument("--seed-hex", required=True)
    pub.add_argument("--topic", required=True)
    pub.add_argument("--type", default="heartbeat")
    pub.add_argument("--count", type=int, default=1)
    pub.add_argument("--wait-ms", type=int, default=5000)
    pub.add_argument("--tamper", action="store_true")
    sub = modes.add_parser("sub")
    sub.add_argument("--trust-hex", required=True)
    sub.add_argument("--count", type=int, default=1)
    sub.add_argument("--timeout-ms", type=int, default=10_000)
    for p in (pub, sub):
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--bind", metavar="EP")
        where.add_argument("--connect", metavar="EP")
        p.add_argument("--curve-seed-hex", help="own ed25519 seed: be a CURVE client")
        p.add_argument("--curve-server-hex", help="the binding side's ed25519 public key")
    args = parser.parse_args()
    return run_pub(args) if args.mode == "pub" else run_sub(args)


if __name__ == "__main__":
    sys.exit(main())
