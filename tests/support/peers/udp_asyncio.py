#!/usr/bin/env python3
"""asyncio clients of a UDP echo server: a real, independent peer for switchboard's tests.

Standard library only. Each client is an asyncio DatagramProtocol on an endpoint connected to
the server (loop.create_datagram_endpoint with remote_addr). It sends, one at a time and
waiting for each echo, datagrams of the sizes given with --sizes (0, 1, 1000 and 65507 bytes
by default: empty, tiny, ordinary, the largest UDP datagram over IPv4), then --count small
datagrams, each numbered and with its own bytes, keeping at most --window of them in flight
so no socket buffer on loopback overflows. It checks that every echo came back byte-exact,
as one datagram_received per datagram sent: nothing merged, split, lost, duplicated, or
belonging to another client.

Usage:

    udp_asyncio.py --addr HOST:PORT [--clients N] [--count N] [--window N] [--sizes A,B,..]

Prints exactly one line on stdout, a JSON summary:

    {"ok": true, "clients": 1, "sent": 204, "datagram_received": 204, "echoed": 204,
     "sizes": [0, 1, 1000, 65507], "numbered": 200, "errors": [], "failures": []}

and exits 0 only when "ok" is true. Every wait has a timeout (--timeout seconds, default 5),
so a lost echo is a failure, not a stall.
"""

import argparse
import asyncio
import json
import os
import random
import socket
import sys


class EchoClient(asyncio.DatagramProtocol):
    """Records every datagram and error the endpoint delivers, and wakes whoever waits."""

    def __init__(self):
        self.transport = None
        self.received = []
        self.errors = []
        self.lost = None
        self.arrived = asyncio.Event()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.received.append(data)
        self.arrived.set()

    def error_received(self, exc):
        self.errors.append(repr(exc))
        self.arrived.set()

    def connection_lost(self, exc):
        self.lost = exc
        self.arrived.set()

    async def wait_for(self, count, timeout):
        """Waits until `count` datagrams in all have arrived; False if `timeout` passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.received) < count:
            left = deadline - loop.time()
            if left <= 0:
                return False
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                return len(self.received) >= count
        return True


def send_empty(transport):
    """Sends a zero-length datagram on the connected socket under `transport`."""
    sock = transport.get_extra_info("socket")
    with socket.socket(fileno=os.dup(sock.fileno())) as raw:
        raw.send(b"")


def numbered(client, number, rng):
    """Datagram `number` of `client`: `CLIENT:NUMBER:`, then 0 to 64 bytes of its own."""
    return f"{client}:{number}:".encode() + rng.randbytes(rng.randrange(65))


def header(datagram):
    """The (client, number) a numbered datagram starts with, or None."""
    parts = datagram.split(b":", 2)
    if len(parts) != 3:
        return None
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return None


async def run_client(args, client):
    """One client's exchange; returns (sent, received, echoed byte-exact, failures, errors)."""
    loop = asyncio.get_running_loop()
    host, port = args.addr.rsplit(":", 1)
    transport, protocol = await asyncio.wait_for(
        loop.create_datagram_endpoint(EchoClient, remote_addr=(host, int(port))), args.timeout
    )

    def send(payload):
        if payload:
            transport.sendto(payload)
        else:
            # Before Python 3.13, asyncio's sendto() ignores an empty datagram (gh-113812);
            # the socket itself sends one.
            send_empty(transport)

    rng = random.Random(client)
    failures = []
    sent = 0
    echoed = 0
    try:
        # Stop-and-wait, so each echo is known by its place: an empty one has nothing else.
        for size in args.sizes:
            payload = rng.randbytes(size)
            send(payload)
            sent += 1
            if not await protocol.wait_for(sent, args.timeout):
                failures.append(f"client {client}: no echo of the {size}-byte datagram")
                return sent, len(protocol.received), echoed, failures, protocol.errors
            echo = protocol.received[sent - 1]
            if echo == payload:
                echoed += 1
            else:
                failures.append(
                    f"client {client}: sent {size} bytes, got {len(echo)} back"
                    + (" (other bytes)" if len(echo) == size else "")
                )

        # Numbered datagrams, at most a window of them in flight.
        expected = {}
        for number in range(args.count):
            payload = numbered(client, number, rng)
            expected[(client, number)] = payload
            send(payload)
            sent += 1
            if sent - len(protocol.received) >= args.window:
                await protocol.wait_for(sent - args.window // 2, args.timeout)
        if not await protocol.wait_for(sent, args.timeout):
            failures.append(
                f"client {client}: {sent - len(protocol.received)} of {sent} echoes missing "
                f"after {args.timeout}s"
            )
        seen = set()
        for echo in protocol.received[len(args.sizes):]:
            key = header(echo)
            if key not in expected:
                failures.append(f"client {client}: an echo it did not send: {echo[:40]!r}")
            elif key in seen:
                failures.append(f"client {client}: datagram {key[1]} came back twice")
            elif echo != expected[key]:
                failures.append(
                    f"client {client}: datagram {key[1]} came back as {len(echo)} bytes, "
                    f"sent {len(expected[key])}"
                )
            else:
                echoed += 1
            seen.add(key)
        if protocol.lost is not None:
            failures.append(f"client {client}: connection_lost({protocol.lost!r})")
        return sent, len(protocol.received), echoed, failures, protocol.errors
    finally:
        transport.close()


async def run(args):
    results = await asyncio.gather(*(run_client(args, client) for client in range(args.clients)))
    sent = sum(result[0] for result in results)
    received = sum(result[1] for result in results)
    echoed = sum(result[2] for result in results)
    failures = [failure for result in results for failure in result[3]]
    errors = [error for result in results for error in result[4]]
    return {
        "ok": not failures and not errors and received == sent and echoed == sent,
        "clients": args.clients,
        "sent": sent,
        "datagram_received": received,
        "echoed": echoed,
        "sizes": args.sizes,
        "numbered": args.count,
        "errors": errors,
        "failures": failures[:10],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="the server's UDP address, HOST:PORT")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(size) for size in text.split(",") if size],
        default=[0, 1, 1000, 65507],
    )
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()

    summary = asyncio.run(run(args))
    print(json.dumps(summary))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
