#!/usr/bin/env python3
"""Small helpers for scripts/bench-request-token (standard library only). Ports, process
trees and readiness come from scripts/bench/util.py; this file adds the CPU-time count.

    util.py free-ports N                 N distinct free 127.0.0.1 TCP ports, one a line
    util.py tree PID                     PID and all its descendants, one a line
    util.py cpu-ticks PID [PID...]       utime+stime (clock ticks) of the PIDs and their descendants
    util.py wait-ready PID TIMEOUT URL [URL...]
                                         until one URL answers 200 (exit 0), PID exits (exit 1)
                                         or TIMEOUT seconds pass (exit 2)
"""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from util import free_ports, tree, wait_ready  # noqa: E402  (scripts/bench/util.py)


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
