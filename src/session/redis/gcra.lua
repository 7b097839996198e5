-- GCRA on one key, mirroring `gcra` in src/ratelimit.rs step for step; shared by
-- rate_limit.lua and begin_queued.lua (each is this file followed by its own).
-- `key` holds the limit's TAT (unix ms); now ms, emission interval ms and burst tolerance ms
-- are integers below 2^53, so exact as Lua numbers.
-- Allowed: stores the new TAT with PX = the time until it is reached (a TAT in the past is
-- the same as none, so the key goes once it is back to a full burst) and returns {1, 0}.
-- Limited: changes nothing and returns {0, retry_after_ms}.
local function gcra(key, now, interval, tolerance)
  now, interval, tolerance = tonumber(now), tonumber(interval), tonumber(tolerance)
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local ahead = tat - now
  if ahead > tolerance then return {0, ahead - tolerance} end
  local new_tat = tat + interval
  redis.call('SET', key, string.format('%d', new_tat),
    'PX', string.format('%d', new_tat - now))
  return {1, 0}
end
