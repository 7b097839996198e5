#!/usr/bin/env python3
"""Turns the raw results of scripts/bench-proxy into its tables (standard library only).

Reads, from --dir:
    results.tsv   one line per measured wrk run: round, placement, scenario, target, wrk
                  output file, proxy CPU ticks ("-" for direct), upstream ticks, wrk ticks,
                  busy ticks of the CPUs the run used, wall seconds (tab-separated)
    mem-<proxy>-start.json, mem-<proxy>-load.json   util.py mem: after start / after the load runs
    idle-<proxy>-<count>.json                        idle_conns.py, one per connection count
    stream-<proxy>-down.json, stream-<proxy>-up.json stream.py: the 1 GiB transfers
Prints the tables as plain text, then as Markdown (with the per-round table as well): one
load table per CPU placement, each sidecar figure set against the best nginx row of that
placement (figure by figure), and one memory table.
The wrk output files hold latency.lua's BENCH_LATENCY_US line (p50/p90/p99/p99.9/max).
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

SCENARIOS = [
    ("passthrough", "pass-through (pushrules)"),
    ("versions", "/versions"),
    ("upload", "1 MiB upload"),
    ("download", "1 MiB download"),
]
PER_MIB = {"upload", "download"}  # one request moves 1 MiB: CPU µs/req is µs/MiB
LATENCY_TARGET = {"passthrough", "versions"}  # p99 has a target only for the small requests
NOISY_PCT = 10
PLACEMENTS = [
    ("alone", "proxy alone on its core"),
    ("shared", "proxy and upstream share a core (as in a Pod)"),
    ("unpinned", "no pinning"),
]
TARGETS = [("direct", "direct"), ("nginx", "nginx tuned"), ("nginx-default", "nginx default"),
           ("haproxy", "haproxy"), ("sidecar", "sidecar")]
NGINX_ROWS = ("nginx", "nginx-default")
PROXIES = [("sidecar", "sidecar"), ("nginx", "nginx tuned"), ("nginx-default", "nginx default"),
           ("haproxy", "HAProxy")]
# The sidecar's memory targets: per idle keep-alive connection, at 10,000 of them, and the
# growth while 1 GiB streams through ("flat").
PER_CONN_TARGET_KIB = 4.0
RSS_10K_TARGET_MIB = 60
STREAM_GROWTH_TARGET_MIB = 2
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def latency_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(path):
    """wrk's output: req/s, requests, errors, and latencies in ms. p50/p99 come from
    latency.lua's exact line when it is there (else from --latency's rounded table); p90,
    p99.9, max and mean only from that line (None without it)."""
    with open(path) as f:
        out = f.read()
    r = {"rps": None, "p50": None, "p90": None, "p99": None, "p999": None, "max": None,
         "mean": None, "requests": None, "errors": 0, "raw": out}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+),", out, re.M)
    if m:
        r["requests"] = int(m.group(1))
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        if m:
            r["p" + pct] = latency_ms(m.group(1))
    m = re.search(r"^BENCH_LATENCY_US (.*)$", out, re.M)
    if m:
        fields = dict(kv.split("=", 1) for kv in m.group(1).split())
        for key, name in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999"),
                          ("max", "max"), ("mean", "mean")):
            if key in fields:
                r[name] = float(fields[key]) / 1000
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["errors"] += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["errors"] += int(m.group(1))
    return r


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt_int(x):
    return "n/a" if x is None else f"{x:,.0f}"


def fmt_ms(x):
    if x is None:
        return "n/a"
    if x < 1:
        return f"{x * 1000:.0f} µs"
    if x < 10:
        return f"{x:.2f} ms"
    if x < 100:
        return f"{x:.1f} ms"
    return f"{x:.0f} ms"


def fmt_cpu(x):
    if x is None:
        return "-"
    return f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def fmt_mib(kib):
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def ratio(a, b, good_if_at_least):
    """'1.05 ok' / '0.80 MISS' for a/b against the 1.0 target."""
    if a is None or b is None or b == 0:
        return "n/a"
    q = a / b
    ok = q >= 1.0 if good_if_at_least else q <= 1.0
    return f"{q:.2f} {'ok' if ok else 'MISS'}"


def plain_ratio(a, b):
    """'1.05' for a/b, no target."""
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def text_table(header, rows, aligns):
    widths = [max(len(str(r[i])) for r in [header] + rows if r) for i in range(len(header))]

    def line(cells):
        out = []
        for c, w, a in zip(cells, widths, aligns):
            out.append(str(c).rjust(w) if a == "r" else str(c).ljust(w))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) if r else "" for r in rows])


def markdown_heading(title, notes):
    """The marker that starts the Markdown copy of a report, its title and its notes."""
    print("---- Markdown ----")
    print()
    if title:
        print(f"### {title}")
        print()
    for n in notes:
        print(f"- {n}")
    if notes:
        print()


def md_table(header, rows, aligns):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if a == "r" else ":---" for a in aligns) + "|"]
    for r in rows:
        if r:
            out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def combine(runs):
    """The rounds of one scenario and target, combined: the median of each figure (with two
    rounds, their mean), errors summed, other load at its worst, and the req/s spread."""
    c = {k: median([r[k] for r in runs]) for k in ("rps", "p50", "p99", "p999", "max", "cpu_us_per_req")}
    c["errors"] = sum(r["errors"] for r in runs) + sum(1 for r in runs if r["rps"] is None)
    c["other_pct"] = max(r["other_pct"] for r in runs)
    rps = [r["rps"] for r in runs if r["rps"] is not None]
    c["spread"] = None
    if len(rps) >= 2 and statistics.mean(rps) > 0:
        c["spread"] = (max(rps) - min(rps)) / statistics.mean(rps) * 100
    c["rounds"] = len(runs)
    return c


def read_results(path, clk_tck):
    runs = {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            rnd, placement, scenario, target, wrk_file, ticks, up, wrk, busy, wall = \
                line.rstrip("\n").split("\t")
            r = parse_wrk(wrk_file)
            r["round"] = int(rnd)
            r["cpu_us_per_req"] = None
            if ticks != "-" and r["requests"]:
                r["cpu_us_per_req"] = int(ticks) / clk_tck * 1e6 / r["requests"]
            # CPU the machine spent on anything but wrk, the upstream and the proxy, in % of
            # one CPU over the run: other work on the machine (a build...) that skews the run.
            ours = int(up) + int(wrk) + (0 if ticks == "-" else int(ticks))
            r["other_pct"] = max(0.0, (int(busy) - ours) / (float(wall) * clk_tck) * 100)
            runs.setdefault((placement, scenario, target), []).append(r)
    return runs


def best_nginx(comb, placement, scenario):
    """The strongest nginx figures of one placement and scenario, figure by figure: the
    higher req/s, the lower latency and CPU, over the nginx rows measured."""
    rows = [comb[(placement, scenario, t)] for t in NGINX_ROWS if (placement, scenario, t) in comb]
    if not rows:
        return None

    def pick(key, fn):
        values = [r[key] for r in rows if r[key] is not None]
        return fn(values) if values else None

    return {"rps": pick("rps", max), "p99": pick("p99", min), "p999": pick("p999", min),
            "cpu_us_per_req": pick("cpu_us_per_req", min)}


def other_cell(pct):
    return f"{pct:.0f}%" + (" !" if pct > NOISY_PCT else "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--clk-tck", type=int, default=100)
    ap.add_argument("--title", default="")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()

    runs = read_results(os.path.join(args.dir, "results.tsv"), args.clk_tck)
    comb = {k: combine(v) for k, v in runs.items()}
    nrounds = max((len(v) for v in runs.values()), default=0)
    placements = [(p, label) for p, label in PLACEMENTS if any(k[0] == p for k in runs)]
    targets = [(t, label) for t, label in TARGETS if any(k[2] == t for k in runs)]
    have = {t for t, _ in targets}
    nginx_have = [t for t in NGINX_ROWS if t in have]

    # --- load tables, one per placement: the rounds combined ---
    header = ["scenario", "target", "req/s", "spread", "p50", "p99", "p99.9", "proxy CPU µs/req",
              "errors", "other load"]
    aligns = ["l", "l", "r", "r", "r", "r", "r", "r", "r", "r"]
    tables, noisy, failed = [], set(), []
    verdicts = {"req/s": [], "p99": [], "CPU/req": []}
    for place, place_label in placements:
        rows = []
        for key, label in SCENARIOS:
            if not any((place, key, t) in comb for t, _ in targets):
                continue
            first = True
            for t, tlabel in targets:
                c = comb.get((place, key, t))
                name = label if first else ""
                first = False
                if c is None:
                    rows.append([name, tlabel] + ["n/a"] * 8)
                    continue
                if c["other_pct"] > NOISY_PCT:
                    noisy.add(f"{place}/{key}/{t}")
                if c["errors"] or c["rps"] is None:
                    failed.append(f"{place}/{key}/{t}")
                rows.append([name, tlabel, fmt_int(c["rps"]),
                             "-" if c["spread"] is None else f"{c['spread']:.1f}%",
                             fmt_ms(c["p50"]), fmt_ms(c["p99"]), fmt_ms(c["p999"]),
                             fmt_cpu(c["cpu_us_per_req"]) if t != "direct" else "-", c["errors"],
                             other_cell(c["other_pct"])])
            s = comb.get((place, key, "sidecar"))
            sv = {k: s and s[k] for k in ("rps", "p99", "p999", "cpu_us_per_req")}
            if "sidecar" in have and nginx_have:
                nv = best_nginx(comb, place, key) or {}
                p99_cell = (ratio(sv["p99"], nv.get("p99"), False) if key in LATENCY_TARGET
                            else plain_ratio(sv["p99"], nv.get("p99")))
                cells = [ratio(sv["rps"], nv.get("rps"), True), "", "", p99_cell,
                         plain_ratio(sv["p999"], nv.get("p999")),
                         ratio(sv["cpu_us_per_req"], nv.get("cpu_us_per_req"), False)]
                where = f"{place}: {label}"
                verdicts["req/s"].append((where, cells[0]))
                if key in LATENCY_TARGET:
                    verdicts["p99"].append((where, cells[3]))
                verdicts["CPU/req"].append((where, cells[5]))
                rows.append(["", "sidecar/best nginx"] + cells + ["", ""])
            if "sidecar" in have and "haproxy" in have:
                n = comb.get((place, key, "haproxy"))
                nv = {k: n and n[k] for k in ("rps", "p99", "p999", "cpu_us_per_req")}
                cells = [plain_ratio(sv["rps"], nv["rps"]), "", "", plain_ratio(sv["p99"], nv["p99"]),
                         plain_ratio(sv["p999"], nv["p999"]),
                         plain_ratio(sv["cpu_us_per_req"], nv["cpu_us_per_req"])]
                rows.append(["", "sidecar/haproxy"] + cells + ["", ""])
            rows.append(None)
        if rows:
            rows.pop()
        tables.append((place, place_label, rows))

    # --- per-round table ---
    rheader = ["round", "placement", "scenario", "target", "req/s", "p50", "p99", "p99.9", "max",
               "proxy CPU µs/req", "errors", "other load"]
    raligns = ["r", "l", "l", "l", "r", "r", "r", "r", "r", "r", "r", "r"]
    rrows = []
    for rnd in range(1, nrounds + 1):
        for place, _ in placements:
            for key, label in SCENARIOS:
                for t, tlabel in targets:
                    r = next((x for x in runs.get((place, key, t), []) if x["round"] == rnd), None)
                    if r is None:
                        continue
                    rrows.append([rnd, place, label, tlabel, fmt_int(r["rps"]), fmt_ms(r["p50"]),
                                  fmt_ms(r["p99"]), fmt_ms(r["p999"]), fmt_ms(r["max"]),
                                  fmt_cpu(r["cpu_us_per_req"]) if t != "direct" else "-", r["errors"],
                                  other_cell(r["other_pct"])])

    # --- memory table ---
    proxies = [(p, label) for p, label in PROXIES
               if glob.glob(os.path.join(args.dir, f"mem-{p}-*.json"))
               or glob.glob(os.path.join(args.dir, f"idle-{p}-*.json"))]
    mheader = ["memory"] + [label for _, label in proxies]
    maligns = ["l"] + ["r"] * len(proxies)
    start = {p: load_json(os.path.join(args.dir, f"mem-{p}-start.json")) for p, _ in proxies}
    after = {p: load_json(os.path.join(args.dir, f"mem-{p}-load.json")) for p, _ in proxies}
    counts = sorted({int(m.group(1)) for f in glob.glob(os.path.join(args.dir, "idle-*-*.json"))
                     if (m := re.search(r"-(\d+)\.json$", f))})
    idle = {(p, n): load_json(os.path.join(args.dir, f"idle-{p}-{n}.json")) for p, _ in proxies for n in counts}
    stream = {(p, d): load_json(os.path.join(args.dir, f"stream-{p}-{d}.json"))
              for p, _ in proxies for d in ("down", "up")}

    def row(label, fn, source):
        cells = []
        for p, _ in proxies:
            try:
                v = fn(source(p))
            except (TypeError, KeyError, ZeroDivisionError):
                v = None
            cells.append("n/a" if v is None else v)
        return [label] + cells

    mrows = [
        row("processes / threads", lambda s: f"{s['processes']} / {s['threads']}", start.get),
        row("RSS after start", lambda s: fmt_mib(s["rss_kib"]), start.get),
    ]
    for n in counts:
        get_idle = (lambda n: lambda p: idle[(p, n)])(n)
        mrows += [
            row(f"RSS with {n:,} idle keep-alive connections", lambda i: fmt_mib(i["rss_idle_kib"]), get_idle),
            row("  per idle connection", lambda i: f"{i['per_conn_kib']:.1f} KiB", get_idle),
            row("  opened / still open after the hold",
                lambda i: f"{i['opened']:,} / {i['still_open']:,}", get_idle),
        ]
    for d, what in (("down", "download"), ("up", "upload")):
        get_stream = (lambda d: lambda p: stream[(p, d)])(d)
        mrows += [
            row(f"RSS peak while streaming a 1 GiB {what}",
                lambda x: fmt_mib(x["rss_peak_kib"]) + ("" if x["ok"] else " FAILED"), get_stream),
            row("  RSS before it; transfer rate",
                lambda x: f"{x['rss_before_kib'] / 1024:.1f} MiB; {x['mib_per_s']:,.0f} MiB/s", get_stream),
        ]
    mrows += [
        row("RSS after the load runs", lambda s: fmt_mib(s["rss_kib"]), after.get),
        row("peak RSS over the load runs (VmHWM)", lambda s: fmt_mib(s["hwm_kib"]), after.get),
    ]

    # --- targets, in words ---
    summary = []
    for name, want, what in (("req/s", "≥ best nginx", "runs"),
                             ("p99", "≤ best nginx", "runs (pass-through and /versions)"),
                             ("CPU/req", "≤ best nginx", "runs (1 MiB: CPU/MiB)")):
        v = verdicts[name]
        if v:
            met = [lab for lab, cell in v if cell.endswith(" ok")]
            missed = [f"{lab} ({cell.split()[0]})" for lab, cell in v if not cell.endswith(" ok")]
            summary.append(f"sidecar {name} {want}: met in {len(met)} of {len(v)} {what}"
                           + (f"; missed: {', '.join(missed)}" if missed else ""))
    for n in counts:
        i = idle.get(("sidecar", n))
        if i and i.get("per_conn_kib") is not None:
            per = i["per_conn_kib"]
            line = (f"sidecar per idle keep-alive connection, {n:,} of them: {per:.1f} KiB "
                    f"(target ≤ {PER_CONN_TARGET_KIB:.0f} KiB): {'ok' if per <= PER_CONN_TARGET_KIB else 'MISS'}")
            if n == 10000 and i.get("rss_idle_kib") is not None:
                mib = i["rss_idle_kib"] / 1024
                line += (f"; RSS {mib:.1f} MiB (target ≤ {RSS_10K_TARGET_MIB} MiB): "
                         f"{'ok' if mib <= RSS_10K_TARGET_MIB else 'MISS'}")
            summary.append(line)
    for d, what in (("down", "download"), ("up", "upload")):
        x = stream.get(("sidecar", d))
        if x and x.get("ok"):
            growth = (x["rss_peak_kib"] - x["rss_before_kib"]) / 1024
            summary.append(f"sidecar RSS while streaming a 1 GiB {what}: +{growth:.1f} MiB "
                           f"(flat: target ≤ +{STREAM_GROWTH_TARGET_MIB} MiB): "
                           f"{'ok' if growth <= STREAM_GROWTH_TARGET_MIB else 'MISS'}")
    problems = []
    for (p, n), i in idle.items():
        if i and (i.get("opened") != i.get("requested") or i.get("still_open") != i.get("opened")):
            problems.append(f"{p}: {i.get('opened')} of {n:,} idle connections opened, "
                            f"{i.get('still_open')} still open after the hold")
    for (p, d), x in stream.items():
        if x and not x.get("ok"):
            problems.append(f"{p}: the 1 GiB {'download' if d == 'down' else 'upload'} failed: {x.get('error')}")

    legend = (
        "targets: direct = wrk straight to the upstream nginx (no proxy); nginx tuned = one worker, "
        "16 KiB in-memory response buffers, uploads streamed; nginx default = its default buffering "
        "(uploads spooled to a file); HAProxy = a plain keep-alive setup; sidecar = "
        "threepid-sidecar (release build).\n"
        "placements: alone = the proxy alone on its core (wrk and the upstream share the other); "
        "shared = the proxy and the upstream share a core (wrk alone on the other).\n"
        f"each load figure is the median over the {nrounds} round(s) (with 2 rounds: their mean); "
        "spread = (max − min) / mean of req/s across the rounds; the ratios use the combined "
        "figures; errors are summed and other load is the worst round's.\n"
        "p50/p99/p99.9 from wrk's latency histogram (latency.lua), closed loop: at saturation "
        "mostly queueing (≈ connections / req/s).\n"
        "proxy CPU µs/req = utime+stime of the proxy's processes during the run / requests "
        "(1 MiB upload and download: µs per MiB).\n"
        "sidecar/best nginx: each figure against the better of the two nginx rows of the same "
        "placement (higher req/s, lower p99 and CPU); req/s ≥ 1.00, CPU ≤ 1.00 and (pass-through, "
        "/versions) p99 ≤ 1.00 meet the target (ok), otherwise MISS; p99.9, the 1 MiB p99 and "
        "sidecar/haproxy are for comparison (no target). errors = wrk socket errors + non-2xx "
        "responses.\n"
        "nginx and HAProxy forward /versions unchanged; the sidecar parses and rewrites it.\n"
        "memory: each figure from a freshly started proxy (restarted before each measurement); "
        "nginx = master + workers summed. The load runs then use one more fresh process: its RSS "
        "after them and its peak (VmHWM).\n"
        "other load = CPU time spent, on the CPUs the run used, by anything but wrk, the upstream "
        f"and the proxy during the run, in % of one CPU; a run over {NOISY_PCT}% (!) shared the "
        "machine and its numbers are skewed: run again on a quiet machine.")
    if failed:
        legend += "\nWARNING: errors or no result in " + ", ".join(failed) + ": those rows mean nothing"
    if noisy:
        legend += (f"\nWARNING: {len(noisy)} row(s) had a run that shared the machine with other work: "
                   + ", ".join(sorted(noisy)))
    for p in problems:
        legend += "\nWARNING: " + p

    def md_mem(rows):
        return [[c.strip() if i == 0 and c.startswith("  ") else c for i, c in enumerate(r)] for r in rows]

    print()
    if args.title:
        print(args.title)
        print("=" * len(args.title))
    for n in args.note:
        print(n)
    for place, place_label, rows in tables:
        print()
        print(f"placement: {place} ({place_label})")
        print()
        print(text_table(header, rows, aligns))
    print()
    for line in summary:
        print(line)
    print()
    if proxies:
        print(text_table(mheader, mrows, maligns))
        print()
    print(legend)
    print()
    markdown_heading(args.title, args.note)
    for place, place_label, rows in tables:
        print(f"**Placement {place}**: {place_label}")
        print()
        print(md_table(header, [r for r in rows if r], aligns))
        print()
    for line in summary:
        print(f"- {line}")
    if summary:
        print()
    if proxies:
        print(md_table(mheader, md_mem(mrows), maligns))
        print()
    for line in legend.split("\n"):
        print(line + "  ")
    print()
    print(f"#### Each round ({nrounds})")
    print()
    print(md_table(rheader, rrows, raligns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
