#!/usr/bin/env python3
"""asyncio clients of an echo server: a real, independent peer for switchboard's tests.

Standard library only. Each client connects, writes its payload, half-closes
(transport.write_eof()) and records every protocol event in order. It passes
when it got its own payload back byte-exact, then the server's EOF, then
connection_lost(None), and nothing in between or after:

    connection_made, data_received..., eof_received, connection_lost(None)

Usage:

    echo_asyncio.py (--addr HOST:PORT | --unix PATH) halfclose [--size N] [--seed S]
    echo_asyncio.py (--addr HOST:PORT | --unix PATH) concurrent [--clients N] [--size N]

Prints exactly one result line on stdout, starting with "OK " or "FAIL ",
and exits 0 only when it starts with "OK ". Every wait has a timeout
(--timeout seconds, default 20), so a hang is a failure, not a stall.
"""

import argparse
import asyncio
import hashlib
import random
import sys


class EchoClient(asyncio.Protocol):
    """Writes a payload, half-closes, and records what comes back."""

    def __init__(self, payload, done):
        self.payload = payload
        self.done = done
        self.received = bytearray()
        self.events = []
        self.transport = None

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        # Several writes, so the payload crosses the wire in more than one piece; asyncio
        # buffers what the socket does not take and sends the EOF after the last byte.
        step = 64 * 1024
        for start in range(0, len(self.payload), step):
            transport.write(self.payload[start:start + step])
        if not transport.can_write_eof():
            self.events.append("cannot-write-eof")
        transport.write_eof()

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.received += data

    def eof_received(self):
        self.events.append("eof")
        # None: asyncio closes the transport, the default behaviour.
        return None

    def connection_lost(self, exc):
        self.events.append(f"lost({exc!r})")
        if not self.done.done():
            self.done.set_result(None)


def payload_for(seed, size):
    return random.Random(seed).randbytes(size)


def describe(data):
    return f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}"


async def run_client(args, seed, size):
    """One client's exchange; returns (None, events) when it passed, else (what went wrong,
    events)."""
    failure, protocol = await exchange(args, seed, size)
    return failure, ", ".join(protocol.events)


async def exchange(args, seed, size):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    payload = payload_for(seed, size)
    protocol = EchoClient(payload, done)
    try:
        if args.unix:
            await asyncio.wait_for(
                loop.create_unix_connection(lambda: protocol, args.unix), args.timeout
            )
        else:
            host, port = args.addr.rsplit(":", 1)
            await asyncio.wait_for(
                loop.create_connection(lambda: protocol, host, int(port)), args.timeout
            )
        await asyncio.wait_for(done, args.timeout)
    except asyncio.TimeoutError:
        if protocol.transport is not None:
            protocol.transport.abort()
        return (
            f"client {seed}: timed out after {args.timeout}s; "
            f"received {len(protocol.received)} of {size} bytes; events {protocol.events}"
        ), protocol
    except OSError as exc:
        return f"client {seed}: {exc!r}", protocol
    expected_events = ["made", "data", "eof", "lost(None)"]
    if not size:
        expected_events.remove("data")
    if protocol.events != expected_events:
        return f"client {seed}: events {protocol.events}, expected {expected_events}", protocol
    if bytes(protocol.received) != payload:
        first_diff = next(
            (i for i, (a, b) in enumerate(zip(protocol.received, payload)) if a != b),
            min(len(protocol.received), len(payload)),
        )
        return (
            f"client {seed}: received {describe(protocol.received)}, "
            f"sent {describe(payload)}; first difference at byte {first_diff}"
        ), protocol
    return None, protocol


async def halfclose(args):
    failure, events = await run_client(args, args.seed, args.size)
    if failure:
        return f"FAIL halfclose: {failure}"
    return f"OK halfclose: {args.size} bytes echoed byte-exact; events {events}"


async def concurrent(args):
    # Every client is connected and writing before any of them finishes: the server serves
    # them all at once. Seeds differ, so a byte delivered to the wrong client is a mismatch.
    results = await asyncio.gather(
        *(run_client(args, seed, args.size) for seed in range(args.clients))
    )
    failures = [failure for failure, _ in results if failure]
    if failures:
        return f"FAIL concurrent: {len(failures)} of {args.clients} clients failed: " + "; ".join(
            failures[:5]
        )
    return (
        f"OK concurrent: {args.clients} clients x {args.size} bytes echoed byte-exact; "
        f"events {results[0][1]}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--addr", help="the server's TCP address, HOST:PORT")
    target.add_argument("--unix", help="the server's Unix socket path")
    parser.add_argument("--timeout", type=float, default=20.0)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("halfclose", help="one client, a large payload")
    one.add_argument("--size", type=int, default=1024 * 1024)
    one.add_argument("--seed", type=int, default=1)
    many = commands.add_parser("concurrent", help="many clients at once, distinct payloads")
    many.add_argument("--clients", type=int, default=50)
    many.add_argument("--size", type=int, default=64 * 1024)
    args = parser.parse_args()

    run = {"halfclose": halfclose, "concurrent": concurrent}[args.command]
    result = asyncio.run(run(args))
    print(result)
    sys.exit(0 if result.startswith("OK ") else 1)


if __name__ == "__main__":
    main()
