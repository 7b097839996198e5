#!/usr/bin/env python3
"""Turns the raw results of scripts/bench-request-token into its table (standard library only).

    report.py --line FILE --clk-tck N        one progress line for the last run in FILE
    report.py --results FILE --clk-tck N [--title T] [--note N ...]
                                             the table as plain text, then as Markdown

FILE has one JSON object a line, written by the script after each measured run: key, label,
wrk (the file holding wrk's output, with request_token.lua's RT_RESULT line), mails (the sink's
counter difference over the run), sessions_before/after, svc_ticks/store_ticks (CPU of the
service and its store), sink_ticks, wrk_ticks, busy_ticks (all CPUs the run used), wall, conns.
"""

import argparse
import json
import os
import re
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from report import markdown_heading, md_table, text_table  # noqa: E402  (scripts/bench/report.py)

NOISY_PCT = 10
SPEEDUP_TARGET = 20.0
P99_TARGET_MS = 5.0
FLAT_TOLERANCE = 0.10


def parse_wrk(path):
    try:
        with open(path) as f:
            out = f.read()
    except OSError:
        return None
    m = re.search(r"^RT_RESULT (\{.*\})\s*$", out, re.M)
    if not m:
        return None
    r = json.loads(m.group(1))
    r["status"] = {int(k): v for k, v in r["status"].items()}
    r["ok"] = sum(v for k, v in r["status"].items() if 200 <= k < 300)
    r["n200"] = r["status"].get(200, 0)
    r["non2xx"] = sum(v for k, v in r["status"].items() if not 200 <= k < 300)
    r["socket_errors"] = sum(r["errors"][k] for k in ("connect", "read", "write", "timeout"))
    secs = r["duration_us"] / 1e6
    r["sps"] = r["n200"] / secs if secs else None
    return r


def load(path, clk_tck):
    rows = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            rec["w"] = parse_wrk(rec["wrk"])
            w = rec["w"]
            rec["cpu_us"] = None
            rec["svc_us"] = None
            if w and w["requests"]:
                rec["cpu_us"] = (rec["svc_ticks"] + rec["store_ticks"]) / clk_tck * 1e6 / w["requests"]
                rec["svc_us"] = rec["svc_ticks"] / clk_tck * 1e6 / w["requests"]
                rec["store_us"] = rec["store_ticks"] / clk_tck * 1e6 / w["requests"]
            ours = rec["svc_ticks"] + rec["store_ticks"] + rec["sink_ticks"] + rec["wrk_ticks"]
            busy_wall = float(rec.get("busy_wall", rec["wall"]))
            rec["other_pct"] = max(0.0, (rec["busy_ticks"] - ours) / (busy_wall * clk_tck) * 100)
            # Mails the sink received during the run itself, per second.
            rec["dps"] = rec.get("mails_run", rec["mails"]) / float(rec["wall"])
            rows.append(rec)
    return rows


def fmt_int(x):
    return "n/a" if x is None else f"{x:,.0f}"


def fmt_ms(us):
    if us is None:
        return "n/a"
    x = us / 1000
    if x < 1:
        return f"{us:.0f} µs"
    if x < 10:
        return f"{x:.2f} ms"
    if x < 100:
        return f"{x:.1f} ms"
    return f"{x:.0f} ms"


def fmt_sessions(rec):
    a, b = rec.get("sessions_before"), rec.get("sessions_after")
    if a is None or b is None:
        return "n/a"
    return f"{a:,} → {b:,}"


def errors_cell(w):
    if w is None:
        return "n/a"
    n = w["non2xx"] + w["socket_errors"]
    if not n:
        return "0"
    parts = [f"{k}×{v}" for k, v in sorted(w["status"].items()) if not 200 <= k < 300]
    parts += [f"{k} {v}" for k, v in w["errors"].items() if k != "status" and v]
    return f"{n:,} ({', '.join(parts)})"


def mails_ok(rec):
    w = rec["w"]
    if w is None:
        return False
    # Every 200 sent one mail; requests still in flight when wrk stopped may add up to one
    # mail per connection that wrk never counted.
    return w["n200"] <= rec["mails"] <= w["n200"] + w["non2xx"] + rec["conns"]


def mails_cell(rec):
    w = rec["w"]
    if w is None:
        return f"{rec['mails']:,}"
    notes = []
    if rec.get("outbox") and rec.get("backlog_end"):
        notes.append(f"{rec['backlog_end']:,} queued at the end, {rec['drain_s']} s to drain")
    if rec.get("left") and rec["mails"] < w["n200"]:
        return (f"{rec['mails']:,} LAG ({rec['left']:,} still queued {rec['drain_s']} s after the run; "
                f"200s: {w['n200']:,})")
    if mails_ok(rec):
        extra = rec["mails"] - w["n200"]
        if extra:
            notes.insert(0, f"+{extra} in flight")
        return f"{rec['mails']:,} ok" + (f" ({'; '.join(notes)})" if notes else "")
    return f"{rec['mails']:,} MISMATCH (200s: {w['n200']:,})"


def rate(rec):
    """What the service sustains end to end: answers/s, or delivered mails/s when lower."""
    w = rec and rec["w"]
    if not w or w["sps"] is None:
        return None
    return min(w["sps"], rec["dps"]) if rec.get("outbox") else w["sps"]


def row(rec):
    w = rec["w"]
    other = f"{rec['other_pct']:.0f}%" + (" !" if rec["other_pct"] > NOISY_PCT else "")
    cpu = "n/a"
    if rec["cpu_us"] is not None:
        cpu = f"{rec['cpu_us']:,.0f}"
        if rec["store_ticks"]:
            cpu += f" ({rec['svc_us']:,.0f} + {rec['store_us']:,.0f})"
    return [rec["label"], fmt_int(w and w["sps"]), fmt_ms(w and w["p50_us"]), fmt_ms(w and w["p99_us"]),
            errors_cell(w), mails_cell(rec), fmt_int(rec["dps"]), fmt_sessions(rec), cpu, other]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(q, ok=None):
    if q is None:
        return "n/a"
    s = f"{q:.2f}" if q < 10 else f"{q:.1f}"
    if ok is not None:
        s += " ok" if ok else " MISS"
    return s


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--line")
    p.add_argument("--results")
    p.add_argument("--clk-tck", type=int, default=100)
    p.add_argument("--title", default="")
    p.add_argument("--note", action="append", default=[])
    args = p.parse_args()

    if args.line:
        rows = load(args.line, args.clk_tck)
        if not rows:
            return 1
        rec = rows[-1]
        r = row(rec)
        print(f"==> {r[0]}: {r[1]} sessions/s, p50 {r[2]}, p99 {r[3]}, non-2xx {r[4]}, "
              f"mails {r[5]}, delivered {r[6]}/s, CPU µs/session {r[8]}, other load {r[9]}")
        return 0

    rows = load(args.results, args.clk_tck)
    by = {r["key"]: r for r in rows}
    header = ["target", "sessions/s", "p50", "p99", "non-2xx", "mails at sink", "delivered/s",
              "live sessions (before → after)", "CPU µs/session (service + store)", "other load"]
    aligns = ["l", "r", "r", "r", "r", "r", "r", "r", "r", "r"]
    table = [row(r) for r in rows]

    verdicts = []
    bad = False
    for r in rows:
        w = r["w"]
        if w is None:
            verdicts.append(f"{r['label']}: no wrk result")
            bad = True
            continue
        if w["non2xx"] or w["socket_errors"] or w["bad_body"]:
            bad = True
        if not mails_ok(r):
            bad = True
    y = by.get("synapse")
    sps = rate
    p50 = lambda r: r and r["w"] and r["w"]["p50_us"]
    p99 = lambda r: r and r["w"] and r["w"]["p99_us"]
    cpu = lambda r: r and r["cpu_us"]
    ratio_rows = []
    # (empty-store key, many-sessions key, name in the ratio rows)
    for ek, mk, name in (("sidecar", "sidecar1m", "sidecar"),
                         ("sidecar_nd", "sidecar1m_nd", "sidecar +TCP_NODELAY shim")):
        s, m = by.get(ek), by.get(mk)
        if s and y:
            q = ratio(sps(s), sps(y))
            ok = q is not None and q >= SPEEDUP_TARGET
            ratio_rows.append([f"{name} / Synapse", fmt_ratio(q, ok), fmt_ratio(ratio(p50(s), p50(y))),
                               fmt_ratio(ratio(p99(s), p99(y))), "", "", "", "", fmt_ratio(ratio(cpu(s), cpu(y))), ""])
            verdicts.append(f"sessions/s {name} / Synapse = {fmt_ratio(q)} (target ≥ {SPEEDUP_TARGET:.0f}): "
                            + ("ok" if ok else "MISS"))
        if s and m:
            many = m["label"].rsplit(", ", 1)[-1]
            q = ratio(sps(m), sps(s))
            q99 = ratio(p99(m), p99(s))
            qc = ratio(cpu(m), cpu(s))
            flat = q is not None and q >= 1 - FLAT_TOLERANCE
            ratio_rows.append([f"{name}: {many} / empty", fmt_ratio(q, flat), fmt_ratio(ratio(p50(m), p50(s))),
                               fmt_ratio(q99), "", "", "", "", fmt_ratio(qc), ""])
            verdicts.append(f"{name}, flat as sessions grow: sessions/s at {many} / empty = {fmt_ratio(q)}, "
                            f"p99 ×{fmt_ratio(q99)}, CPU/session ×{fmt_ratio(qc)} "
                            f"(target: sessions/s within {FLAT_TOLERANCE:.0%}): " + ("ok" if flat else "MISS"))
    if ratio_rows:
        table.append(None)
        table.extend(ratio_rows)
    for r in rows:
        if r["key"].startswith("sidecar") and p99(r) is not None:
            verdicts.append(f"{r['label']}: p99 {fmt_ms(p99(r))} (target < {P99_TARGET_MS:.0f} ms): "
                            + ("ok" if p99(r) < P99_TARGET_MS * 1000 else "MISS"))
    noisy = [r["label"] for r in rows if r["other_pct"] > NOISY_PCT]

    conns = rows[0]["conns"] if rows else "?"
    legend = (
        "sessions/s = 200 answers per second; each created a session and sent one mail. "
        f"p50/p99 from wrk's histogram; with {conns} connections kept busy (a closed loop) latency at "
        "saturation is mostly queueing (≈ connections / sessions/s).\n"
        "non-2xx = non-2xx answers + socket errors. mails at sink = messages the SMTP sink received "
        "from the start of the run until the mail on its way arrived (the outbox's backlog gets a bounded "
        "wait): ok when it is the 200 answers plus at most the requests in flight when wrk stopped; LAG "
        "when queued mail had still not left when the wait ended. delivered/s = mails the sink received "
        "during the run itself, per second; where the sidecar queues mail (outbox), the ratios use it "
        "when it is below sessions/s (what is sustained end to end).\n"
        "CPU µs/session = CPU time of the service and its store (sidecar + redis-server; Synapse with its "
        "in-process SQLite, or + PostgreSQL) over the run and the wait for its mail / requests answered.\n"
        "other load = CPU time spent on the run's CPUs by anything but the service, its store, wrk and "
        f"the sink, in % of one CPU; over {NOISY_PCT}% (!) another job shared the machine and skewed that row."
    )
    if noisy:
        legend += f"\nWARNING: {len(noisy)} run(s) shared the machine with other work: " + ", ".join(noisy)

    print()
    if args.title:
        print(args.title)
        print("=" * len(args.title))
    for n in args.note:
        print(n)
    print()
    print(text_table(header, table, aligns))
    print()
    for v in verdicts:
        print(v)
    print()
    print(legend)
    print()
    markdown_heading(args.title, args.note)
    print(md_table(header, [r for r in table if r], aligns))
    print()
    for v in verdicts:
        print(f"- {v}")
    print()
    for line in legend.split("\n"):
        print(line + "  ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
