-- wrk script for scripts/bench-request-token: every request is a new registration
-- requestToken, so every request creates a session and sends one mail.
--
--   wrk -t1 -c16 -d20s -s request_token.lua http://127.0.0.1:PORT/_matrix/client/v3/register/email/requestToken
--
-- Body: {"client_secret":"<unique>","email":"<unique>@bench.example.org","send_attempt":1}.
-- Unique per request: a prefix made of RT_TAG (environment, set per wrk run by the
-- benchmark), the wrk thread number and a random number seeded from the time and the thread,
-- then a per-thread counter. Addresses are lowercase, so canonicalisation changes nothing.
--
-- At the end it prints one line that the benchmark parses (latencies in microseconds):
--   RT_RESULT {"requests":N,"duration_us":N,"p50_us":N,...,"status":{"200":N,...},
--              "bad_body":N,"errors":{"connect":N,...}}
-- bad_body counts 200 answers whose body has no "sid".

local threads = {}
local counter = 0
local prefix = "x"
statuses = {}
bad_body = 0

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local tag = os.getenv("RT_TAG") or "rt"
  math.randomseed(os.time() * 1000 + (id or 0) * 7919 + math.floor(os.clock() * 1e6))
  prefix = string.format("%s-%d-%x%x", tag, id or 0, math.random(0, 0x3fffffff), math.random(0, 0x3fffffff))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"client_secret":"cs-%s-%d","email":"u-%s-%d@bench.example.org","send_attempt":1}',
    prefix, counter, prefix, counter)
  return wrk.format("POST", nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 200 and not string.find(body or "", '"sid"', 1, true) then
    bad_body = bad_body + 1
  end
end

function done(summary, latency, requests)
  local total = {}
  local bad = 0
  for _, thread in ipairs(threads) do
    local st = thread:get("statuses") or {}
    for code, n in pairs(st) do
      total[code] = (total[code] or 0) + n
    end
    bad = bad + (thread:get("bad_body") or 0)
  end
  local parts = {}
  for code, n in pairs(total) do
    table.insert(parts, string.format('"%d":%d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    'RT_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"p999_us":%d,"max_us":%d,"mean_us":%.1f,"status":{%s},"bad_body":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    table.concat(parts, ","), bad, e.connect, e.read, e.write, e.status, e.timeout))
end
