-- Step 2 of `begin_send`: create the session, or continue it under the `send_attempt` rule.
-- A missing hash means "create" (which also heals a crash between the two steps).
-- KEYS[1] session; ARGV: lifetime ms, now ms, medium, address, secret, purpose,
-- has next_link ('1'/'0'), next_link, send_attempt, token hex, token expiry ms.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then
  redis.call('HSET', key, 'medium', ARGV[3], 'address', ARGV[4], 'secret', ARGV[5],
    'purpose', ARGV[6], 'attempt', ARGV[9], 'failed', '0', 'attempt_token', ARGV[10],
    't:' .. ARGV[10], ARGV[11])
  if ARGV[7] == '1' then redis.call('HSET', key, 'next_link', ARGV[8]) end
  redis.call('PEXPIRE', key, ARGV[1])
  return {'created'}
end
local s = redis.call('HMGET', key, 'medium', 'address', 'secret', 'attempt')
if s[1] ~= ARGV[3] or s[2] ~= ARGV[4] or s[3] ~= ARGV[5] or not s[4] then
  return {'mismatch'}
end
-- u64 as decimal strings without leading zeros: longer is larger, else compare as text.
local new, old = ARGV[9], s[4]
if #new < #old or (#new == #old and new <= old) then return {'already'} end
local now = tonumber(ARGV[2])
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 't:' and (tonumber(fields[i + 1]) or 0) <= now then
    redis.call('HDEL', key, fields[i])
  end
end
redis.call('HSET', key, 'attempt', new, 'attempt_token', ARGV[10], 't:' .. ARGV[10], ARGV[11])
if ARGV[7] == '1' then redis.call('HSET', key, 'next_link', ARGV[8]) end
redis.call('PEXPIRE', key, ARGV[1])
return {'continued', old}
