-- wrk script for scripts/bench-proxy's "1 MiB upload": every request is
--   POST <the URL's path> with a 1 MiB body (/_matrix/media/r0/upload?filename=bench.bin)
-- (wrk adds Content-Length; the body is built once, so wrk sends the same precomputed request
-- each time). The upstream reads the whole body before it answers a small 200 JSON
-- (scripts/bench/upstream.nginx.conf). scripts/bench-proxy appends latency.lua to it.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.body = string.rep("x", 1048576)
