-- `rate_limit`: GCRA on one key, mirroring `gcra` in src/ratelimit.rs step for step.
-- KEYS[1] the limit's key, holding its TAT (unix ms); ARGV: now ms, emission interval ms,
-- burst tolerance ms (integers below 2^53, so exact as Lua numbers).
-- Allowed: stores the new TAT with PX = the time until it is reached (a TAT in the past is
-- the same as none, so the key goes once it is back to a full burst) and returns {1, 0}.
-- Limited: changes nothing and returns {0, retry_after_ms}.
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then return {0, ahead - tolerance} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat),
  'PX', string.format('%d', new_tat - now))
return {1, 0}
