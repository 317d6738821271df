#!/usr/bin/env python3
"""Writes the seed corpora in corpus/<target>/ from requests taken from the tests
(tests/http.rs and the tables in src/http/request.rs and src/http/body.rs).

tests/properties.rs mutates the head and body_split seeds as well. Seeds are a starting
point only: libFuzzer adds what it finds to the same directories
while it runs (those additions are not committed). Run from fuzz/: python3 make_corpus.py
"""

import hashlib
import pathlib

# Request heads: valid ones, and one per rule a head can break.
HEADS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /plaintext HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    b"GET /json HTTP/1.1\r\nHost: test\r\nConnection: keep-alive, CLOSE\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    b"HEAD /json HTTP/1.1\r\nHost: test\r\n\r\n",
    b"POST /users/7?x=1 HTTP/1.1\r\nHost: example\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\n",
    b"\r\nGET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://[::1]:80/p?q HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /caf%C3%A9?q=%20 HTTP/1.2\r\nHost: a\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n",
    b"GET /\xe9 HTTP/1.1\r\nHost: caf\xc3\xa9.example\r\n\r\n",
]

# Bodies as they follow a head, with the config byte body_split reads first:
# low two bits 0 chunked, 2 Content-Length (bits 2..3 x 5); high nibble picks the limit.
BODIES = [
    (0x40, b"5\r\nhello\r\n0\r\n\r\n"),
    (0x40, b"5;name=\"v\\\"x\"\r\nhello\r\n0\r\nTrailer: x\r\n\r\nGET / HTTP/1.1\r\n"),
    (0x40, b"a ; x = y\r\n0123456789\r\n0\r\n\r\n"),
    (0x40, b"5\nhello\r\n0\r\n\r\n"),
    (0x20, b"ff\r\nabc"),
    (0x00, b"1\r\nx\r\n0\r\n\r\n"),
    (0x40 | 2 | 3 << 2, b"012345678901234GET"),
]

# Connection scripts (see fuzz_targets/conn.rs): a config byte, then ops.
def send(data):
    """Op 0 with a length byte, as many times as the data needs."""
    out = b""
    for i in range(0, len(data), 255):
        piece = data[i:i + 255]
        out += bytes([0, len(piece)]) + piece
    return out

EOF_OP, WAIT, DEADLINE, READ, SHUTDOWN = b"\x03", b"\x04\x28", b"\x05", b"\x06", b"\x07"
PIPELINED = (
    b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n"
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe"
)
SCRIPTS = [
    b"\x0a" + send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n") + EOF_OP,
    b"\x0a" + send(PIPELINED) + send(b"llo\r\n0\r\n\r\nGET /live HTTP/1.1\r\nHost: t\r\n\r\n"),
    b"\x1a" + send(b"HEAD /json HTTP/1.1\r\nHost: t\r\n\r\nGET /bytes/70000 HTTP/1.1\r\n\r\n") + READ,
    b"\x0a" + send(b"GET /work?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n") + SHUTDOWN + DEADLINE + SHUTDOWN,
    b"\x0a" + send(b"GET /stream?chunks=3&ms=20 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    + DEADLINE + DEADLINE + DEADLINE,
    b"\x06" + send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    + WAIT + send(b"hello"),
    b"\x0a" + send(b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n") + SHUTDOWN + SHUTDOWN,
    b"\x2a" + send(b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n" * 3) + WAIT + WAIT + WAIT,
    b"\x08" + send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Filler: " + b"b" * 300) + DEADLINE + READ,
]


# What a client sends in one go, for conn_split: a config byte (limits, as conn reads
# it), a cut byte (0: one byte at a time, else the seed of random cuts), the bytes.
STREAMS = [
    b"GET /plaintext HTTP/1.1\r\nHost: t\r\n\r\n" * 2,
    PIPELINED + b"llo\r\n0\r\n\r\nGET /live HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    b"\r\nPOST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcHEAD /json HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
]


def write(target, seeds):
    directory = pathlib.Path("corpus") / target
    directory.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


write("head", HEADS)
write("head_split", HEADS)
write("body_split", [bytes([config, cut]) + body for config, body in BODIES for cut in (0, 7)])
write("conn", SCRIPTS)
write("conn_split", [bytes([config, cut]) + stream
                     for stream in STREAMS + HEADS[:6] for config in (0x0a, 0x09) for cut in (0, 5)])
