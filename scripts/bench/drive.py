#!/usr/bin/env python3
"""A fixed number of requests through a proxy, for instruction counts (callgrind) and system
call counts (strace) per request, where wrk's timed runs do not fit (standard library only).

Opens CONNS keep-alive connections to 127.0.0.1:PORT and sends REQUESTS requests in batches:
one request on every connection, then every answer read, so that the proxy sees CONNS
requests at once (as under wrk) but the total is exact. Prints one JSON object: requests,
seconds, and the non-2xx answers (must be 0).

  passthrough  GET /_matrix/client/r0/pushrules/
  versions     GET /_matrix/client/versions
  download     GET /_matrix/media/r0/download/bench/1mib (1 MiB answer, read and dropped)
  upload       POST /_matrix/media/r0/upload with a 1 MiB body

usage: drive.py --port PORT --scenario S [--requests 2000] [--conns 8]
"""

import argparse
import json
import os
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

PATHS = {
    "passthrough": ("GET", "/_matrix/client/r0/pushrules/"),
    "versions": ("GET", "/_matrix/client/versions"),
    "download": ("GET", "/_matrix/media/r0/download/bench/1mib"),
    "upload": ("POST", "/_matrix/media/r0/upload?filename=bench.bin"),
}
BODY = b"u" * (1 << 20)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--scenario", choices=sorted(PATHS), required=True)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--conns", type=int, default=8)
    args = ap.parse_args()

    method, path = PATHS[args.scenario]
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\nUser-Agent: bench-drive\r\n"
    if method == "POST":
        head += f"Content-Type: application/octet-stream\r\nContent-Length: {len(BODY)}\r\n"
    request = (head + "\r\n").encode() + (BODY if method == "POST" else b"")

    socks = []
    for _ in range(args.conns):
        s = socket.create_connection(("127.0.0.1", args.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append([s, b""])
    bad, done = 0, 0
    t0 = time.monotonic()
    while done < args.requests:
        batch = socks[:min(args.conns, args.requests - done)]
        for s in batch:
            s[0].sendall(request)
        for s in batch:
            status, s[1] = util.read_response(s[0], s[1])
            bad += not 200 <= status < 300
        done += len(batch)
    seconds = time.monotonic() - t0
    for s in socks:
        s[0].close()
    print(json.dumps({"requests": done, "seconds": round(seconds, 3), "non_2xx": bad}))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
