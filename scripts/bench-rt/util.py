#!/usr/bin/env python3
"""Small helpers for scripts/bench-request-token (standard library only), in the style of
scripts/bench/util.py but kept here, so that this benchmark does not depend on the other's
helpers staying as they are.

    util.py free-ports N                 N distinct free 127.0.0.1 TCP ports, one a line
    util.py tree PID                     PID and all its descendants, one a line
    util.py cpu-ticks PID [PID...]       utime+stime (clock ticks) of the PIDs and their descendants
    util.py wait-ready PID TIMEOUT URL [URL...]
                                         until one URL answers 200 (exit 0), PID exits (exit 1)
                                         or TIMEOUT seconds pass (exit 2)
"""

import os
import socket
import sys
import time
import urllib.error
import urllib.request


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def children(pid):
    out = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        if not os.path.exists(f"/proc/{p}"):
            continue
        pids.append(p)
        todo.extend(children(p))
    return pids


def cpu_ticks(pids):
    total = 0
    for root in pids:
        for p in tree(root):
            try:
                with open(f"/proc/{p}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            # After "(comm)": state is field 3, so utime (14) and stime (15) are at 11 and 12.
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
    return total


def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


# Loopback only: never go through an http_proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def status_of(url):
    try:
        with OPENER.open(url, timeout=1.0) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def wait_ready(pid, timeout, urls):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state(pid) in (None, "Z"):
            return 1
        for url in urls:
            if status_of(url) == 200:
                print(url)
                return 0
        time.sleep(0.1)
    return 2


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    cmd, args = argv[1], argv[2:]
    if cmd == "free-ports":
        print("\n".join(str(p) for p in free_ports(int(args[0]))))
    elif cmd == "tree":
        print("\n".join(str(p) for p in tree(int(args[0]))))
    elif cmd == "cpu-ticks":
        print(cpu_ticks([int(a) for a in args]))
    elif cmd == "wait-ready":
        return wait_ready(int(args[0]), float(args[1]), args[2:])
    else:
        print(__doc__, file=sys.stderr)
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
