#!/usr/bin/env python3
"""Memory held by idle keep-alive connections, for scripts/bench-proxy (standard library only).

Opens COUNT TCP connections to 127.0.0.1:PORT, sends one keep-alive
`GET PATH HTTP/1.1` on each and reads the response, then holds them all open for HOLD
seconds while sampling VmRSS of PID and its descendants (nginx: master + workers), then
closes them. Prints one JSON object:

    opened        connections that got a complete 2xx response
    still_open    of those, how many the server had not closed by the end of the hold
    rss_before_kib  summed VmRSS before the first connection
    rss_idle_kib    highest summed VmRSS sampled while the connections were held
    hwm_kib         summed VmHWM (peak RSS) at the end of the hold
    per_conn_kib    (rss_idle - rss_before) / opened
    setup_s         seconds it took to open them all (one after the other)

usage: idle_conns.py --port PORT --pid PID [--count 1000] [--hold 3] [--path P]
"""

import argparse
import json
import os
import resource
import select
import socket
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import util  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=3.0)
    ap.add_argument("--path", default="/_matrix/client/r0/pushrules/")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))

    request = (f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
               "Connection: keep-alive\r\nUser-Agent: bench-idle-conns\r\n\r\n").encode()

    rss_before = util.mem(args.pid)["rss_kib"]
    socks, errors = [], []
    t0 = time.monotonic()
    try:
        for _ in range(args.count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(("127.0.0.1", args.port))
                s.sendall(request)
                status, _ = util.read_response(s)
                if not 200 <= status < 300:
                    errors.append(f"status {status}")
                    s.close()
                    continue
            except OSError as e:
                errors.append(str(e))
                s.close()
                continue
            socks.append(s)

        setup = time.monotonic() - t0
        rss_idle = util.mem(args.pid)["rss_kib"]
        deadline = time.monotonic() + args.hold
        while time.monotonic() < deadline:
            time.sleep(0.25)
            rss_idle = max(rss_idle, util.mem(args.pid)["rss_kib"])
        after = util.mem(args.pid)

        # A connection the server closed is readable (EOF); count the ones still open.
        # (poll, not select: the descriptors go past FD_SETSIZE.)
        poller = select.poll()
        for s in socks:
            poller.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
        closed = len(poller.poll(0))
    finally:
        for s in socks:
            s.close()

    opened = len(socks)
    print(json.dumps({
        "requested": args.count,
        "opened": opened,
        "still_open": opened - closed,
        "errors": errors[:5],
        "error_count": len(errors),
        "rss_before_kib": rss_before,
        "rss_idle_kib": rss_idle,
        "hwm_kib": after["hwm_kib"],
        "per_conn_kib": round((rss_idle - rss_before) / opened, 2) if opened else None,
        "setup_s": round(setup, 2),
    }))
    return 0 if opened == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
