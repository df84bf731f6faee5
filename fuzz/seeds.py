#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target: fuzz/corpus/TARGET/seed-NAME.

Each seed is laid out as its target reads a fuzz input (fuzz/checks/): settings bytes, then the
cut points (a count, then a little-endian u16 each), then the data. A seed is a small, valid
example of what the target parses, cut somewhere interesting; the fuzzer mutates from there.
Run it again after changing a layout: `python3 fuzz/seeds.py`. Inputs named regression-* are
crashes found and fixed, kept by hand.
"""

import os
import struct

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def cuts(*points):
    return bytes([len(points)]) + b"".join(struct.pack("<H", point) for point in points)


def frame(fin, opcode, payload, mask=b"\x37\xfa\x21\x3d"):
    """A WebSocket frame as a client sends it (RFC 6455, 5.2), masked unless mask is None."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    bit = 0x80 if mask is not None else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 1 << 16:
        head += bytes([bit | 126]) + struct.pack(">H", length)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", length)
    if mask is None:
        return head + payload
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def sent(fin, opcode, payload, utf8=False, missing=0):
    """A frame of the websocket_messages layout: flags, length, mask, payload. With missing, the
    frame is cut short: its length says that many bytes more than the input has."""
    index = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA].index(opcode)
    flags = (index << 1) | (1 if fin else 0) | (0x40 if missing else 0) | (0x80 if utf8 else 0)
    return bytes([flags, len(payload) + missing]) + b"\x01\x02\x03\x04" + payload


def length_frame(payload):
    return struct.pack(">I", len(payload)) + payload


# Text that is valid up to U+110000, past the last code point, proven invalid at F4 90: the
# payload of Autobahn's cases 6.4.1 to 6.4.4.
KOSME = "κόσμε".encode()
PAST_MAX = KOSME + b"\xf4\x90\x80\x80edited"

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)

SEEDS = {
    # max_length (0: none, else % 32), max_buffered (0x80 | limit), hand-over (0x80 | chunk,
    # 0x40: the decode iterator), cuts, data.
    "framing_lines": {
        "crlf-and-lf": b"\0\0\0" + cuts(4, 9) + b"one\r\ntwo\nthree",
        "max-length": b"\x08\0\0" + cuts(3, 20) + b"short\nthis line is too long\nok\n\xff\xfe\n",
        "starttls-hand-over": b"\0\0\x80" + cuts(9) + b"STARTTLS\n\x16\x03\x01binary\nline\n",
        "max-buffered": b"\0\x90\x40" + cuts(5, 30) + b"a\nb\n" + b"x" * 40 + b"\nc",
        "iterator-errors": b"\x04\0\x40" + cuts(7) + b"ab\nabcdef\n\xc3\x28\nok\r\nend\r",
    },
    # max_frame_length (0x80 | limit, else 8 MiB), max_buffered, hand-over, cuts, data.
    "framing_length_delimited": {
        "frames": b"\0\0\0" + cuts(2, 9) + length_frame(b"abc") + length_frame(b"") + length_frame(b"xy"),
        "too-big": b"\x90\0\0" + cuts(6) + length_frame(b"ok") + length_frame(b"x" * 17) + b"more",
        "hand-over": b"\0\0\x80" + cuts(7) + length_frame(b"abc") + length_frame(b"next"),
        "max-buffered": b"\0\x84\0" + cuts(6, 11) + length_frame(b"0123456789") + b"\0\0",
    },
    "smtp_command": {
        "ehlo": b"EHLO mx.example",
        "mail": b"MAIL FROM:<a@example.org> SIZE=1234 BODY=8BITMIME",
        "mail-null": b"mail from: <>",
        "rcpt-route": b"RCPT TO:<@relay.example:b@example.net>",
        "starttls": b"StartTLS",
        "vrfy": b"VRFY postmaster",
    },
    # max_size (0x7f bits; 0: none), 0x80: the stuffer; cuts; data.
    "smtp_data": {
        "two-messages": b"\0" + cuts(3, 17, 30)
        + b"Subject: t\r\n\r\n..dots\r\nbody\r\n.\r\nsecond\r\n.\r\nQUIT\r\n",
        "bare-lf-is-content": b"\0" + cuts(2) + b"a\n.\nb\r.\rc\r\n.\r\n",
        "over-max-size": b"\x10" + cuts(5) + b"0123456789\r\n..x\r\n.\r\nNOOP\r\n",
        "stuffer": b"\x80" + cuts(1, 8) + b".leading\r\n.\r\nno end",
        "stuffer-max-size": b"\x88" + cuts(4) + b"..\r\n.\r\r\n",
    },
    # max_size / 4, cuts, data.
    "smtp_session": {
        "transaction": b"\x40" + cuts(10, 40, 60)
        + b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nSubject: x\r\n\r\n..hi\r\n.\r\nQUIT\r\n",
        "pipelined-twice": b"\x40" + cuts(6)
        + b"DATA\r\none\r\n.\r\nDATA\r\n.\r\r\n.\r\nNOOP\n",
        "line-too-long": b"\x01" + cuts(300, 515) + b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\nDATA\r\n" + b"y" * 10 + b"\r\n.\r\n",
    },
    # pad (a header field of pad x 70 bytes after the first line), cuts, data.
    "http_request": {
        "get": b"\0" + cuts(5) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "upgrade": b"\0" + cuts(20, 100) + UPGRADE + frame(True, 0x1, b"hi"),
        "pipelined": b"\0" + cuts(30)
        + b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /ws HTTP/1.1\r\nHost: x\r\n\r\n"
        + b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        "head-too-large": b"\xf0" + cuts(16000) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "malformed": b"\0" + cuts(4) + b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    },
    # max_message / 8, cuts, data after the switch.
    "websocket_frames": {
        "text-ping-close": b"\x10" + cuts(3, 11)
        + frame(True, 0x1, b"Hello") + frame(True, 0x9, b"p") + frame(True, 0x8, b"\x03\xe8bye"),
        "fragments": b"\x10" + cuts(9) + frame(False, 0x1, b"caf\xc3") + frame(True, 0xA, b"")
        + frame(True, 0x0, b"\xa9!"),
        "unmasked": b"\x10" + cuts() + frame(True, 0x2, b"raw", mask=None),
        "reserved": b"\x10" + cuts() + bytes([0x83, 0x80]) + b"\0\0\0\0",
        "too-big": b"\x01" + cuts(2) + frame(True, 0x2, b"z" * 9),
        # One text frame, never finished, that fails as soon as F4 90 is in (Autobahn 6.4.4).
        "utf8-fails-inside-a-frame": b"\x10" + cuts(17, 19) + frame(True, 0x1, PAST_MAX)[:19],
    },
    # max_message / 4, cuts, frames (flags, length, mask, payload; the flags: 0x01 fin, bits 1
    # to 5 the opcode, 0x40 cut short by the end of the input, 0x80 mostly UTF-8).
    "websocket_messages": {
        "echo": b"\x40" + cuts(7) + sent(True, 0x1, b"hello", utf8=True) + sent(True, 0x2, b"\0\xff"),
        "fragments": b"\x40" + cuts(5, 20) + sent(False, 0x1, b"ab", utf8=True)
        + sent(True, 0x9, b"ping") + sent(True, 0x0, b"cd", utf8=True),
        "close": b"\x40" + cuts() + sent(True, 0x8, b"\x03\xe8ok") + sent(True, 0x1, b"late"),
        "errors": b"\x02" + cuts(3) + sent(True, 0x0, b"") + sent(False, 0x9, b""),
        # Text that cannot become UTF-8 fails at its first fragment (no pong for the ping behind
        # it), and so does a character cut between fragments once the next proves it wrong.
        "utf8-fails-early": b"\x40" + cuts(4) + sent(False, 0x1, b"ok \xff")
        + sent(True, 0x9, b"p") + sent(True, 0x0, b"end"),
        "utf8-cut-character": b"\x40" + cuts(9) + sent(False, 0x1, b"\xce\xba\xf4")
        + sent(False, 0x0, b"\x90\x80\x80") + sent(True, 0x9, b"p") + sent(True, 0x0, b"x"),
        # Text fails inside its frame, before the rest of it comes: the frame of a message, or
        # a continuation that proves a character begun before wrong; text valid so far waits.
        "utf8-fails-inside-a-frame": b"\x40" + cuts(13, 19)
        + sent(True, 0x1, KOSME + b"\xf4\x90", missing=8),
        "utf8-fails-inside-a-continuation": b"\x40" + cuts(20, 26) + sent(False, 0x1, KOSME + b"\xf4")
        + sent(True, 0x9, b"p") + sent(True, 0x0, b"\x90", missing=10),
        "utf8-cut-short-waits": b"\x40" + cuts(9) + sent(True, 0x1, b"ok", utf8=True)
        + sent(True, 0x1, b"caf\xc3", missing=3),
    },
}


def main():
    for target, seeds in SEEDS.items():
        directory = os.path.join(CORPUS, target)
        os.makedirs(directory, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(directory, "seed-" + name), "wb") as seed:
                seed.write(data)


if __name__ == "__main__":
    main()
