"""An independent TLS client for tests/tls_connect.rs: connects with Python's ssl module,
prints what it sees of the session as one JSON line, sends a line, and waits for EOF.

usage: tls_info.py HOST PORT CAFILE SERVER_NAME
"""

import json
import socket
import ssl
import sys

host, port, cafile, server_name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=cafile)
with socket.create_connection((host, port), timeout=10) as raw:
    with context.wrap_socket(raw, server_hostname=server_name) as tls:
        name, protocol, bits = tls.cipher()
        print(
            json.dumps(
                {
                    "cipher": [name, protocol, bits],
                    "version": tls.version(),
                    "peer_der": tls.getpeercert(binary_form=True).hex(),
                    "sockname": list(tls.getsockname()[:2]),
                    "peername": list(tls.getpeername()[:2]),
                }
            ),
            flush=True,
        )
        tls.sendall(b"ready\n")
        while tls.recv(4096):
            pass
