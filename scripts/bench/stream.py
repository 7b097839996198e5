#!/usr/bin/env python3
"""Memory of a proxy while one large body streams through it, for scripts/bench-proxy
(standard library only).

  down: GET PATH, reads the whole response body (Content-Length) and drops it.
  up:   POST PATH with a Content-Length of BYTES, sends zeros from one 1 MiB buffer (nothing
        is held in memory), then reads the answer; the upstream's sink.py says how many
        bytes it received, which must be all of them.

Meanwhile a thread samples the summed VmRSS of PID and its descendants every INTERVAL
seconds. Prints one JSON object:

    ok              the transfer completed: status 200 and every byte arrived
    status, bytes, expected, seconds, mib_per_s
    rss_before_kib  summed VmRSS before the request
    rss_peak_kib    highest summed VmRSS sampled from the request to the end of the answer
    samples         how many samples that is
    error           what went wrong, when not ok

usage: stream.py --port PORT --pid PID --direction down|up --path PATH [--bytes N]
                 [--interval 0.05]
"""

import argparse
import json
import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402

BUF = 1 << 20


class Sampler(threading.Thread):
    def __init__(self, pid, interval):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak, self.samples = 0, 0
        self.stop = threading.Event()

    def sample(self):
        self.peak = max(self.peak, util.mem(self.pid)["rss_kib"])
        self.samples += 1

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def finish(self):
        self.stop.set()
        self.join()
        self.sample()


def download(sock, args):
    sock.sendall((f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
                  "User-Agent: bench-stream\r\nConnection: close\r\n\r\n").encode())
    status, headers, rest = util.read_head(sock)
    want = int(headers.get("content-length", "-1"))
    got = len(rest)
    view = memoryview(bytearray(BUF))
    while want < 0 or got < want:
        n = sock.recv_into(view)
        if not n:
            break
        got += n
    return status, got, want, None


def upload(sock, args):
    sock.sendall((f"POST {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
                  "User-Agent: bench-stream\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {args.bytes}\r\nConnection: close\r\n\r\n").encode())
    zeros = memoryview(bytes(BUF))
    sent = 0
    while sent < args.bytes:
        n = min(BUF, args.bytes - sent)
        sock.sendall(zeros[:n])
        sent += n
    status, headers, rest = util.read_head(sock)
    body = rest
    want = int(headers.get("content-length", "-1"))
    while want < 0 or len(body) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    try:
        received = json.loads(body)["received"]
    except (ValueError, KeyError, TypeError):
        return status, None, args.bytes, f"answer without a byte count: {body[:200]!r}"
    return status, received, args.bytes, None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--direction", choices=("down", "up"), required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args()

    before = util.mem(args.pid)["rss_kib"]
    sampler = Sampler(args.pid, args.interval)
    status = got = want = None
    error = None
    sampler.start()
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout) as sock:
            fn = download if args.direction == "down" else upload
            status, got, want, error = fn(sock, args)
    except (OSError, ValueError, IndexError) as e:
        error = f"{type(e).__name__}: {e}"
    seconds = time.monotonic() - t0
    sampler.finish()

    ok = error is None and status == 200 and got is not None and got == want
    if error is None and not ok:
        error = f"status {status}, {got} of {want} bytes"
    print(json.dumps({
        "ok": ok,
        "direction": args.direction,
        "status": status,
        "bytes": got,
        "expected": want,
        "seconds": round(seconds, 3),
        "mib_per_s": round(got / (1 << 20) / seconds, 1) if got and seconds > 0 else None,
        "rss_before_kib": before,
        "rss_peak_kib": sampler.peak,
        "samples": sampler.samples,
        "error": error,
    }))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
