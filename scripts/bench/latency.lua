-- wrk script for scripts/bench-proxy: at the end of a run, prints the latency percentiles
-- that `wrk --latency` leaves out (it stops at p99), in one line that report.py parses:
--   BENCH_LATENCY_US p50=.. p90=.. p99=.. p99.9=.. max=.. mean=.. requests=.. errors=..
-- All latencies in microseconds, from wrk's own histogram (1 µs resolution, merged over
-- threads). errors = connect + read + write + timeout socket errors + non-2xx/3xx answers.
-- Used for every run; the upload script is this file appended to scripts/bench/upload.lua.
-- Defining only done() keeps wrk on its precomputed request: no Lua per request.
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH_LATENCY_US p50=%d p90=%d p99=%d p99.9=%d max=%d mean=%.1f requests=%d errors=%d\n",
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max, latency.mean, summary.requests,
        e.connect + e.read + e.write + e.timeout + e.status))
end
