#!/usr/bin/env python3
"""Turns the raw results of scripts/bench-proxy into its tables (standard library only).

Reads, from --dir:
    results.tsv            scenario <TAB> target <TAB> wrk output file <TAB> proxy CPU ticks or "-"
    mem-<target>-start.json, mem-<target>-load.json   util.py mem, after start / after the wrk runs
    idle-<target>.json     idle_conns.py output (run between the two)
Prints a plain-text table, then the same as Markdown.
"""

import argparse
import json
import os
import re
import sys

SCENARIOS = [
    ("passthrough", "pass-through (pushrules)"),
    ("versions", "/versions"),
    ("download", "1 MiB download"),
]
NOISY_PCT = 10
TARGETS = [("direct", "direct"), ("nginx", "nginx"), ("sidecar", "sidecar")]
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def latency_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(path):
    with open(path) as f:
        out = f.read()
    r = {"rps": None, "p50": None, "p99": None, "requests": None, "errors": 0, "raw": out}
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


def text_table(header, rows, aligns):
    widths = [max(len(str(r[i])) for r in [header] + rows if r) for i in range(len(header))]

    def line(cells):
        out = []
        for c, w, a in zip(cells, widths, aligns):
            out.append(str(c).rjust(w) if a == "r" else str(c).ljust(w))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) if r else "" for r in rows])


def md_table(header, rows, aligns):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if a == "r" else ":---" for a in aligns) + "|"]
    for r in rows:
        if r:
            out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--clk-tck", type=int, default=100)
    ap.add_argument("--title", default="")
    ap.add_argument("--note", action="append", default=[])
    args = ap.parse_args()

    results = {}
    with open(os.path.join(args.dir, "results.tsv")) as f:
        for line in f:
            scenario, target, wrk_file, ticks, up, wrk, busy, wall = line.rstrip("\n").split("\t")
            r = parse_wrk(wrk_file)
            r["cpu_us_per_req"] = None
            if ticks != "-" and r["requests"]:
                r["cpu_us_per_req"] = int(ticks) / args.clk_tck * 1e6 / r["requests"]
            # CPU the machine spent on anything but wrk, the upstream and the proxy, in % of
            # one CPU over the run: other work on the machine (a build...) that skews the run.
            ours = int(up) + int(wrk) + (0 if ticks == "-" else int(ticks))
            r["other_pct"] = max(0.0, (int(busy) - ours) / (float(wall) * args.clk_tck) * 100)
            results[(scenario, target)] = r

    # --- load table ---
    header = ["scenario", "target", "req/s", "p50", "p99", "proxy CPU µs/req", "errors", "other load"]
    aligns = ["l", "l", "r", "r", "r", "r", "r", "r"]
    rows = []
    noisy = []
    for key, label in SCENARIOS:
        first = True
        for t, tlabel in TARGETS:
            r = results.get((key, t))
            if r is None:
                rows.append([label if first else "", tlabel] + ["n/a"] * 6)
            else:
                cpu = r["cpu_us_per_req"]
                other = f"{r['other_pct']:.0f}%"
                if r["other_pct"] > NOISY_PCT:
                    other += " !"
                    noisy.append(f"{key}/{t}")
                rows.append([label if first else "", tlabel, fmt_int(r["rps"]), fmt_ms(r["p50"]),
                             fmt_ms(r["p99"]), fmt_cpu(cpu) if t != "direct" else "-", r["errors"], other])
            first = False
        s, n = results.get((key, "sidecar")), results.get((key, "nginx"))
        rows.append(["", "sidecar/nginx",
                     ratio(s and s["rps"], n and n["rps"], True), "",
                     ratio(s and s["p99"], n and n["p99"], False),
                     ratio(s and s["cpu_us_per_req"], n and n["cpu_us_per_req"], False), "", ""])
        rows.append(None)
    rows.pop()

    # --- memory table ---
    mheader = ["memory", "sidecar", "nginx proxy"]
    maligns = ["l", "r", "r"]
    # (after start, after the load runs, the idle-connection test)
    mem = {t: (load_json(os.path.join(args.dir, f"mem-{t}-start.json")),
               load_json(os.path.join(args.dir, f"mem-{t}-load.json")),
               load_json(os.path.join(args.dir, f"idle-{t}.json"))) for t in ("sidecar", "nginx")}

    def cell(t, fn):
        try:
            v = fn(*mem[t])
        except (TypeError, KeyError):
            return "n/a"
        return "n/a" if v is None else v

    idle_n = next((m[2]["requested"] for m in mem.values() if m[2]), 1000)
    mrows = [
        ["processes / threads", cell("sidecar", lambda s, l, i: f"{s['processes']} / {s['threads']}"),
         cell("nginx", lambda s, l, i: f"{s['processes']} / {s['threads']}")],
        ["RSS after start", cell("sidecar", lambda s, l, i: fmt_mib(s["rss_kib"])),
         cell("nginx", lambda s, l, i: fmt_mib(s["rss_kib"]))],
        [f"RSS with {idle_n:,} idle keep-alive connections (before any load)",
         cell("sidecar", lambda s, l, i: fmt_mib(i["rss_idle_kib"])),
         cell("nginx", lambda s, l, i: fmt_mib(i["rss_idle_kib"]))],
        ["  per idle connection", cell("sidecar", lambda s, l, i: f"{i['per_conn_kib']:.1f} KiB"),
         cell("nginx", lambda s, l, i: f"{i['per_conn_kib']:.1f} KiB")],
        ["  connections opened / still open after the hold",
         cell("sidecar", lambda s, l, i: f"{i['opened']} / {i['still_open']}"),
         cell("nginx", lambda s, l, i: f"{i['opened']} / {i['still_open']}")],
        ["RSS after the load runs", cell("sidecar", lambda s, l, i: fmt_mib(l["rss_kib"])),
         cell("nginx", lambda s, l, i: fmt_mib(l["rss_kib"]))],
        ["peak RSS over the whole run (VmHWM)", cell("sidecar", lambda s, l, i: fmt_mib(l["hwm_kib"])),
         cell("nginx", lambda s, l, i: fmt_mib(l["hwm_kib"]))],
    ]

    legend = ("targets: direct = wrk straight to the upstream nginx (no proxy); "
              "nginx = nginx reverse proxy; sidecar = threepid-sidecar (release build).\n"
              "proxy CPU µs/req = utime+stime of the proxy's processes during the run / requests "
              "(for the 1 MiB download: µs per MiB).\n"
              "sidecar/nginx ratios: req/s ≥ 1.00, p99 ≤ 1.00 and CPU ≤ 1.00 meet the target "
              "(ok), otherwise MISS. errors = wrk socket errors + non-2xx responses.\n"
              "nginx proxies /versions unchanged; the sidecar parses and rewrites it.\n"
              "other load = CPU time spent, on the CPUs the run used, by anything but wrk, the upstream and the proxy "
              f"during the run, in % of one CPU; a run over {NOISY_PCT}% (!) shared the machine "
              "and its numbers are skewed: run again on a quiet machine.")
    failed = [f"{k}/{t}" for (k, t), r in results.items() if r["errors"] or r["rps"] is None]
    if failed:
        legend += "\nWARNING: errors or no result in " + ", ".join(failed) + ": those rows mean nothing"
    if noisy:
        legend += f"\nWARNING: {len(noisy)} run(s) shared the machine with other work: " + ", ".join(noisy)

    print()
    if args.title:
        print(args.title)
        print("=" * len(args.title))
    for n in args.note:
        print(n)
    print()
    print(text_table(header, rows, aligns))
    print()
    print(text_table(mheader, mrows, maligns))
    print()
    print(legend)
    print()
    print("---- Markdown ----")
    print()
    if args.title:
        print(f"### {args.title}")
        print()
    for n in args.note:
        print(f"- {n}")
    if args.note:
        print()
    print(md_table(header, [r for r in rows if r], aligns))
    print()
    print(md_table(mheader, [[c.strip() if i == 0 and c.startswith("  ") else c for i, c in enumerate(r)]
                             for r in mrows], maligns))
    print()
    for line in legend.split("\n"):
        print(line + "  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
