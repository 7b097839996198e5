#!/usr/bin/env python3
"""Small helpers for scripts/bench-proxy (standard library only).

    util.py free-ports N                 N distinct free 127.0.0.1 TCP ports, one a line
    util.py tree PID                     PID and all its descendants, one a line
    util.py mem PID                      JSON: summed VmRSS/VmHWM (KiB), process and thread count
    util.py wait-ready PID TIMEOUT URL [URL...]
                                         until one URL answers 200 (exit 0), PID exits (exit 1)
                                         or TIMEOUT seconds pass (exit 2); prints the URL that answered
    util.py check TARGET URL_BASE WWW    sanity-checks the benchmark paths through a target: the
                                         three GETs (/versions: as the upstream wrote it, or for the
                                         sidecar its rewrite of it), and a 1 MiB upload that must
                                         reach the upstream whole (its X-Bench-Request-Length header)
"""

import json
import os
import re
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
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(c) for c in f.read().split())
            except OSError:
                pass
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


def status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def kib(value):
    return int(value.split()[0]) if value else 0


def mem(pid):
    pids = tree(pid)
    rss = hwm = threads = 0
    for p in pids:
        st = status(p)
        rss += kib(st.get("VmRSS"))
        hwm += kib(st.get("VmHWM"))
        threads += int(st.get("Threads", "0"))
    return {"pids": pids, "processes": len(pids), "threads": threads, "rss_kib": rss, "hwm_kib": hwm}


# Loopback only: never go through an http_proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def read_head(sock, buf=b""):
    """Reads one HTTP/1.1 response head from sock (after what is already in buf); returns
    (status, headers with lower-case names, the bytes read past the head)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError(f"connection closed before the response head ({len(buf)} bytes)")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, rest


def read_response(sock, buf=b""):
    """Reads one whole HTTP/1.1 response (Content-Length or chunked); returns (status, the bytes
    read past it, for the next response on the connection)."""
    status, headers, rest = read_head(sock, buf)

    def more(rest):
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("connection closed in the response body")
        return rest + chunk

    if "content-length" in headers:
        want = int(headers["content-length"])
        while len(rest) < want:
            rest = more(rest)
        return status, rest[want:]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while b"0\r\n\r\n" not in rest:
            rest = more(rest)
        return status, rest.split(b"0\r\n\r\n", 1)[1]
    return status, rest


def get(url, timeout=5.0):
    """(status, headers, body) for a GET; (None, None, error text) when nothing answered."""
    return request(url, timeout=timeout)


def request(url, data=None, headers=None, method=None, timeout=5.0):
    """(status, headers, body) for a request; (None, None, error text) when nothing answered."""
    try:
        req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()
    except (OSError, ValueError) as e:
        return None, None, str(e).encode()


def wait_ready(pid, timeout, urls):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}") or status(pid).get("State", "").startswith("Z"):
            return 1
        for url in urls:
            code, _, _ = get(url, timeout=1.0)
            if code == 200:
                print(url)
                return 0
        time.sleep(0.1)
    return 2


def versions_rewrite_problems(upstream, doc, notes):
    """What is wrong with the sidecar's /versions answer, given the upstream's: it must keep
    everything the upstream said (every version in the same order, every unstable feature
    with its value, every other field), set m.require_identity_server to false, and may add
    spec versions after the upstream's own (upstream.advertise_versions: "v1.1" while the
    v3→r0 mapping is on, as it is for this r0-only upstream). Adds what changed to notes."""
    problems = []
    versions = doc.get("versions")
    theirs = upstream["versions"]
    if not isinstance(versions, list) or versions[:len(theirs)] != theirs:
        problems.append(f"versions: the upstream's versions {theirs} were not kept in order: {versions}")
    else:
        added = versions[len(theirs):]
        bad = [v for v in added if not (isinstance(v, str) and re.fullmatch(r"v\d+\.\d+", v))
               or v in theirs or added.count(v) > 1]
        if bad:
            problems.append(f"versions: added entries that are not new vN.N versions: {bad}")
        elif added:
            notes.append("versions added: " + ", ".join(added))
    features = doc.get("unstable_features")
    if not isinstance(features, dict):
        problems.append("versions: unstable_features is not an object")
        return problems
    lost = {k: v for k, v in upstream.get("unstable_features", {}).items()
            if k != "m.require_identity_server" and features.get(k) != v}
    if lost:
        problems.append(f"versions: the upstream's unstable_features were not kept: {lost}")
    other = {k for k in upstream if k not in ("versions", "unstable_features") and doc.get(k) != upstream[k]}
    if other:
        problems.append(f"versions: the upstream's fields were not kept: {sorted(other)}")
    if features.get("m.require_identity_server") is False:
        notes.append("m.require_identity_server=false set")
    else:
        problems.append("versions: m.require_identity_server=false was not added")
    return problems


def check(target, base, www):
    """Checks what each target answers on the benchmark paths; prints one line, exit 1 on a problem."""
    with open(os.path.join(www, "versions.json"), "rb") as f:
        upstream_versions = json.loads(f.read())
    with open(os.path.join(www, "pushrules.json"), "rb") as f:
        pushrules = f.read()
    problems, notes = [], []

    code, headers, body = get(base + "/_matrix/client/r0/pushrules/")
    if code != 200 or body != pushrules:
        problems.append(f"pushrules: status {code}, {len(body)} bytes (want 200, the file's {len(pushrules)})")

    code, headers, body = get(base + "/_matrix/client/versions")
    if code != 200:
        problems.append(f"versions: status {code}")
    else:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            problems.append("versions: body is not a JSON object")
        else:
            if target == "sidecar":
                problems += versions_rewrite_problems(upstream_versions, doc, notes)
            elif doc != upstream_versions:
                problems.append("versions: body differs from the upstream's")
            ctype = headers.get("Content-Type", "")
            if not ctype.startswith("application/json"):
                problems.append(f"versions: Content-Type {ctype!r}")

    code, headers, body = get(base + "/_matrix/media/r0/download/bench/1mib", timeout=10.0)
    if code != 200 or len(body) != 1 << 20:
        problems.append(f"1mib: status {code}, {len(body)} bytes (want 200, 1048576)")

    # The upload: the upstream reads the whole body before it answers, and says how much
    # it read ($request_length: request line + headers + body).
    upload = b"u" * (1 << 20)
    code, headers, body = request(base + "/_matrix/media/r0/upload?filename=check.bin", data=upload,
                                  headers={"Content-Type": "application/octet-stream"},
                                  method="POST", timeout=10.0)
    read = None
    try:
        read = int(headers.get("X-Bench-Request-Length", "")) if headers else None
    except ValueError:
        pass
    try:
        uri = json.loads(body).get("content_uri") if code == 200 else None
    except (ValueError, AttributeError):
        uri = None
    if code != 200 or uri != "mxc://bench/upload":
        problems.append(f"upload: status {code}, body {body[:80]!r}")
    elif read is None or read < len(upload):
        problems.append(f"upload: the upstream read {read} bytes of request (want > {len(upload)})")

    if problems:
        print(f"{target}: PROBLEM: " + "; ".join(problems))
        return 1
    print(f"{target}: ok" + (" — " + "; ".join(notes) if notes else ""))
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    cmd, args = argv[1], argv[2:]
    if cmd == "free-ports":
        print("\n".join(str(p) for p in free_ports(int(args[0]))))
    elif cmd == "tree":
        print("\n".join(str(p) for p in tree(int(args[0]))))
    elif cmd == "mem":
        print(json.dumps(mem(int(args[0]))))
    elif cmd == "wait-ready":
        return wait_ready(int(args[0]), float(args[1]), args[2:])
    elif cmd == "check":
        return check(args[0], args[1], args[2])
    else:
        print(__doc__, file=sys.stderr)
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
