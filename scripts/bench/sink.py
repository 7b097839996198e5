#!/usr/bin/env python3
"""Upload sink for scripts/bench-proxy (standard library only).

Listens on 127.0.0.1:PORT and, one connection at a time, reads one HTTP/1.x request:
a body with Content-Length (or chunked) is read to its end and thrown away, then it answers
200 with {"content_uri": "mxc://bench/sink", "received": <body bytes>} and closes the
connection. The upstream nginx streams the 1 GiB upload to it (proxy_request_buffering off),
so the answer comes only once every byte has gone through the proxy under test.

usage: sink.py --port PORT
"""

import argparse
import json
import socket
import sys

BUF = 1 << 20


class Closed(Exception):
    pass


def read_head(conn):
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            raise Closed()
        buf += chunk
        if len(buf) > 65536:
            raise Closed()
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, rest


def read_exactly_discard(conn, n, view):
    """Reads and drops n bytes; returns how many arrived before EOF."""
    got = 0
    while got < n:
        k = conn.recv_into(view, min(BUF, n - got))
        if not k:
            break
        got += k
    return got


def read_chunked(conn, rest, view):
    """Reads a chunked body (sizes parsed, data dropped); returns the data bytes."""
    buf, total = rest, 0
    while True:
        while b"\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                raise Closed()
            buf += chunk
        line, _, buf = buf.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while not buf.startswith(b"\r\n") and b"\r\n\r\n" not in buf:  # trailers
                chunk = conn.recv(65536)
                if not chunk:
                    return total
                buf += chunk
            return total
        need = size + 2  # data and its CRLF
        take = min(need, len(buf))
        buf, need = buf[take:], need - take
        if need:
            if read_exactly_discard(conn, need, view) < need:
                raise Closed()
        total += size


def handle(conn, view):
    request_line, headers, rest = read_head(conn)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        received = read_chunked(conn, rest, view)
    else:
        want = int(headers.get("content-length", "0") or 0)
        received = min(len(rest), want)
        if want > received:
            received += read_exactly_discard(conn, want - received, view)
    body = json.dumps({"content_uri": "mxc://bench/sink", "received": received,
                       "request": request_line}).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(64)
    view = memoryview(bytearray(BUF))
    while True:
        conn, _ = srv.accept()
        try:
            conn.settimeout(300)
            handle(conn, view)
        except (Closed, OSError, ValueError):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
