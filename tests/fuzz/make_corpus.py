#!/usr/bin/python3
"""Writes the seed corpus of receive_fuzz (tests/fuzz/corpus/receive). Run with /usr/bin/python3
(needs python3-nacl). The trusted key has the seed 01 01 .. 01, the clock stands at
1700000000000 ms, as in receive_fuzz.cpp."""
import json, os, sys
import nacl.signing

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "receive")
os.makedirs(out, exist_ok=True)
key = nacl.signing.SigningKey(bytes([1]) * 32)
pk = key.verify_key.encode()
SEP = b"|#|"
TS = 1700000000000

def payload(seq=1, ts=TS, typ="obs", body='{"state":"running"}', frm=None, v=1):
    return ('{"v":%d,"from":"%s","seq":%d,"ts":%d,"type":%s,"body":%s}'
            % (v, (frm or pk).hex(), seq, ts, json.dumps(typ), body)).encode()

def signed(topic, p):
    sig = key.sign(b"enjin-v1\x00" + topic + b"\x00" + p).signature
    return pk + sig

def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)

p = payload()
write("valid", b"\x00" + b"obs.r2.web" + SEP + p + SEP + signed(b"obs.r2.web", p))
write("resign-valid", b"\x01" + b"obs.r2.web" + SEP + p + SEP)
write("resign-acl", b"\x01" + b"ring.r1" + SEP + p + SEP)
write("resign-stale", b"\x01obs" + SEP + payload(ts=TS - 600000) + SEP)
write("resign-identity", b"\x01obs" + SEP + payload(frm=bytes(32)) + SEP)
write("resign-dupkey", b"\x01obs" + SEP + payload(body='{"a":1,"a":2}') + SEP)
write("resign-deep", b"\x01obs" + SEP + payload(body="[" * 40 + "]" * 40) + SEP)
write("resign-utf8", b"\x01obs" + SEP + payload(body='{"s":"\xc3\xa9"}').replace(b"\xc3\xa9", b"\xc3") + SEP)
write("resign-bigint", b"\x01obs" + SEP + payload().replace(b'"seq":1', b'"seq":18446744073709551616') + SEP)
write("resign-version", b"\x01obs" + SEP + payload(v=2) + SEP)
write("resign-nul", b"\x01obs" + SEP + p + b"\x00{}" + SEP)
write("bitflip", b"\x00obs" + SEP + p.replace(b"running", b"runnint") + SEP + signed(b"obs", p))
write("two-frames", b"\x00obs" + SEP + p)
write("four-frames", b"\x00obs" + SEP + p + SEP + signed(b"obs", p) + SEP + b"x")
write("bad-topic", b"\x01obs..x" + SEP + p + SEP)
write("empty", b"\x00")
print("wrote", len(os.listdir(out)), "seeds to", out)
