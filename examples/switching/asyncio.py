#!/usr/bin/env python3
# The switching server of switchboard.rs, written with asyncio's Protocol: a comparison for the
# book's line count. Standard library only.
#
#     python3 examples/switching/asyncio.py 127.0.0.1:7000

import asyncio
import struct
import sys


class Switching(asyncio.Protocol):
    # Text lines until UPGRADE, then length-prefixed frames.

    def __init__(self):
        self.store, self.buffer, self.framed = {}, b"", False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while True:
            if not self.framed:
                line, newline, rest = self.buffer.partition(b"\n")
                if not newline:
                    return
                self.buffer, command = rest, line.rstrip(b"\r").decode()
                if command == "UPGRADE":
                    self.transport.write(b"OK\n")
                    self.framed = True
                else:
                    self.transport.write(self.reply(command).encode() + b"\n")
            else:
                if len(self.buffer) < 4:
                    return
                (length,) = struct.unpack(">I", self.buffer[:4])
                if len(self.buffer) < 4 + length:
                    return
                frame, self.buffer = self.buffer[4 : 4 + length], self.buffer[4 + length :]
                reply = self.reply(frame.decode(errors="replace")).encode()
                self.transport.write(struct.pack(">I", len(reply)) + reply)

    def reply(self, command):
        words = command.split(" ", 2)
        if words == ["PING"]:
            return "PONG"
        if len(words) == 3 and words[0] == "SET":
            self.store[words[1]] = words[2]
            return "OK"
        if len(words) == 2 and words[0] == "GET":
            return self.store.get(words[1], "NIL")
        return "ERR unknown command"


async def main():
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7000").rsplit(":", 1)
    server = await asyncio.get_running_loop().create_server(Switching, host, int(port))
    print("listening on %s:%d" % server.sockets[0].getsockname()[:2], flush=True)
    await server.serve_forever()


asyncio.run(main())
