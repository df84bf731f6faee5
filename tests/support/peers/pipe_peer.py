#!/usr/bin/env python3
"""Independent peers of switchboard's pipe transports (tests/pipe_transport.rs).

Standard library only. The bytes both sides agree on are SHA-256 in counter mode:
block k (32 bytes) is sha256(k as 8 bytes, big-endian), and a stream of N bytes is
the first N bytes of blocks 0, 1, 2, ... It has no period, so reordering, loss or
duplication at any offset shows up.

Usage:

    pipe_peer.py write N           write N stream bytes to stdout in uneven chunks, exit
    pipe_peer.py read [--slow]     read stdin to EOF; print "LEN SHA256HEX"
    pipe_peer.py fifo-write PATH N open the FIFO PATH for writing, write N stream bytes
    pipe_peer.py fifo-read PATH    open the FIFO PATH for reading, read to EOF; print
                                   "LEN SHA256HEX"
    pipe_peer.py mkfifo PATH       create a FIFO at PATH
    pipe_peer.py tty               open a pseudo-terminal and print its path; at "go" on
                                   stdin, type two lines and ^D (EOF) into it; exit at
                                   stdin's EOF

`--slow` reads 16 KiB at a time with a 1 ms pause after each read, so a writer
feels back-pressure. Errors go to stderr with a non-zero exit status.
"""

import hashlib
import os
import sys
import time


def stream(n):
    """The first n bytes of the counter-mode stream."""
    blocks = (n + 31) // 32
    data = b"".join(hashlib.sha256(k.to_bytes(8, "big")).digest() for k in range(blocks))
    return data[:n]


def write_all(fd, data):
    """Writes all of data in uneven chunks (1 byte to ~100 KB), as an unhurried program would."""
    view = memoryview(data)
    offset, size = 0, 1
    while offset < len(view):
        end = min(offset + size, len(view))
        while offset < end:
            offset += os.write(fd, view[offset:end])
        size = (size * 7 + 13) % 100_003 + 1


def read_to_eof(fd, slow):
    """Reads fd to EOF; returns "LEN SHA256HEX"."""
    digest = hashlib.sha256()
    total = 0
    while True:
        chunk = os.read(fd, 16 * 1024 if slow else 256 * 1024)
        if not chunk:
            return f"{total} {digest.hexdigest()}"
        digest.update(chunk)
        total += len(chunk)
        if slow:
            time.sleep(0.001)


def tty():
    master, slave = os.openpty()
    print(os.ttyname(slave), flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("expected go")
    # Canonical mode: a read of the terminal returns at most one line, and ^D on an empty
    # line is the terminal's end of file (a read that returns nothing).
    os.write(master, b"typed on a terminal\nand a second line\n\x04")
    # Keep the terminal until the test is done with it.
    sys.stdin.read()


def main(args):
    if args[:1] == ["write"] and len(args) == 2:
        write_all(1, stream(int(args[1])))
    elif args[:1] == ["read"] and args[1:] in ([], ["--slow"]):
        print(read_to_eof(0, args[1:] == ["--slow"]), flush=True)
    elif args[:1] == ["fifo-write"] and len(args) == 3:
        fd = os.open(args[1], os.O_WRONLY)
        write_all(fd, stream(int(args[2])))
        os.close(fd)
    elif args[:1] == ["fifo-read"] and len(args) == 2:
        fd = os.open(args[1], os.O_RDONLY)
        print(read_to_eof(fd, False), flush=True)
    elif args[:1] == ["mkfifo"] and len(args) == 2:
        os.mkfifo(args[1])
    elif args == ["tty"]:
        tty()
    else:
        sys.exit(f"usage: see {sys.argv[0]}'s docstring; got {args}")


if __name__ == "__main__":
    main(sys.argv[1:])
