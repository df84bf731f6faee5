#!/usr/bin/env python3
"""An asyncio echo server: every byte a client sends comes back to it.

The asyncio program that examples/echo_server.rs translates, for the book's chapter
"Coming from asyncio". Standard library only; Python 3.11 or later.

    python3 examples/asyncio/echo_server.py                       # 127.0.0.1:8888
    python3 examples/asyncio/echo_server.py --addr 127.0.0.1:0    # a free port
    printf 'hi\\n' | cargo run --example echo_client -- --addr 127.0.0.1:PORT

It behaves as echo_server.rs does: it prints exactly one line to stdout, `listening on
HOST:PORT` with the address really bound, once it accepts connections; while a connection's
write buffer is over its high-water mark it stops reading that connection; when a client
half-closes, it finishes echoing and closes (asyncio's default for eof_received); on SIGINT or
SIGTERM it stops accepting, closes every connection and exits 0.
"""

import argparse
import asyncio
import signal
import weakref


# ANCHOR: protocol
class Echo(asyncio.Protocol):
    """The echo protocol: one object per connection."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.transport = None

    # A client that sends faster than it reads would fill the write buffer with echoes; so
    # while the buffer is over its high-water mark, stop reading.
    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()
# ANCHOR_END: protocol


def host_and_port(addr):
    """Splits `HOST:PORT` (or `[V6HOST]:PORT`)."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def show(sockname):
    """Formats a bound address as echo_server.rs prints it."""
    host, port = sockname[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def main(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    # Server.close_clients() arrived in Python 3.13; before it, a server keeps its own list.
    protocols = weakref.WeakSet()

    def echo():
        protocol = Echo()
        protocols.add(protocol)
        return protocol

    # ANCHOR: serve
    host, port = host_and_port(args.addr)
    server = await loop.create_server(echo, host, port)
    print(f"listening on {show(server.sockets[0].getsockname())}", flush=True)
    # ANCHOR_END: serve

    # ANCHOR: shutdown
    await stop.wait()
    server.close()
    for protocol in list(protocols):
        transport = getattr(protocol, "transport", None)  # None before connection_made
        if transport is not None:
            transport.close()  # Server.close_clients(), from Python 3.13
    await server.wait_closed()  # from Python 3.12.1, waits for the connections too
    # ANCHOR_END: shutdown


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="An asyncio echo server over TCP")
    parser.add_argument(
        "--addr",
        default="127.0.0.1:8888",
        help="the TCP address to listen on (port 0 picks a free port)",
    )
    asyncio.run(main(parser.parse_args()))
