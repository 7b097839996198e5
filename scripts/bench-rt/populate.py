#!/usr/bin/env python3
"""Writes, as Redis protocol (RESP) for `redis-cli --pipe`, N live email registration
sessions in the sidecar's own Redis key layout (src/session/redis/mod.rs, lookup.lua,
begin.lua), exactly as `begin_send` leaves a new session after its first mail:

    {prefix}lookup:{<hex sha256(medium \\0 address \\0 hex sha256(client_secret) \\0 purpose \\0)>} = sid   PX lifetime
    {prefix}session:{<sid>} = hash  medium, address, secret (hex sha256 of the client secret),
                                    purpose, attempt, failed, attempt_token, t:<token hash> = expiry ms
                                    PEXPIRE lifetime

Session i has address pop-<i, 7 digits>@bench.example.org, client secret pop-secret-<i>, a
random 24-character alphanumeric sid and the token hash sha256("pop-token-<i>").

    populate.py --count N [--prefix threepid:] [--lifetime-ms 86400000] [--sample FILE]

--sample FILE gets JSON with a few sessions (index, sid, address, client_secret) for the
benchmark's checks. Standard library only.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import time

ALNUM = bytes.maketrans(b"+/", b"Xq")  # base64 of random bytes, made alphanumeric


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--prefix", default="threepid:")
    p.add_argument("--lifetime-ms", type=int, default=86_400_000)
    p.add_argument("--token-lifetime-ms", type=int, default=3_600_000)
    p.add_argument("--sample")
    args = p.parse_args()

    prefix = args.prefix.encode()
    lifetime = b"%d" % args.lifetime_ms
    expiry = b"%d" % (int(time.time() * 1000) + args.token_lifetime_ms)
    sha = hashlib.sha256
    out = sys.stdout.buffer
    n = args.count
    sample_at = {0, n // 2, n - 1} if n else set()
    samples = []
    rand = os.urandom(18 * min(n, 100_000))
    buf = []
    for i in range(n):
        j = i % 100_000
        if j == 0 and i:
            rand = os.urandom(18 * min(n - i, 100_000))
        sid = base64.b64encode(rand[18 * j:18 * j + 18]).translate(ALNUM)
        address = b"pop-%07d@bench.example.org" % i
        secret = b"pop-secret-%d" % i
        secret_hex = sha(secret).hexdigest().encode()
        token_hex = sha(b"pop-token-%d" % i).hexdigest().encode()
        lookup_hex = sha(b"email\0" + address + b"\0" + secret_hex + b"\0registration\0").hexdigest().encode()
        session_key = prefix + b"session:{" + sid + b"}"
        buf.append(resp(b"HSET", session_key, b"medium", b"email", b"address", address,
                        b"secret", secret_hex, b"purpose", b"registration", b"attempt", b"1",
                        b"failed", b"0", b"attempt_token", token_hex, b"t:" + token_hex, expiry))
        buf.append(resp(b"PEXPIRE", session_key, lifetime))
        buf.append(resp(b"SET", prefix + b"lookup:{" + lookup_hex + b"}", sid, b"PX", lifetime))
        if i in sample_at:
            samples.append({"index": i, "sid": sid.decode(), "address": address.decode(),
                            "client_secret": secret.decode()})
        if len(buf) >= 3000:
            out.write(b"".join(buf))
            buf.clear()
    out.write(b"".join(buf))
    out.flush()
    if args.sample:
        with open(args.sample, "w") as f:
            json.dump(samples, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
