-- Marks a session validated after a token matched, giving the reserved attempt back.
-- KEYS[1] session; ARGV: secret hex, now ms, how long to keep it (ms). Returns the hash, or {}
-- if gone.
local key = KEYS[1]
if redis.call('HGET', key, 'secret') ~= ARGV[1] then return {} end
if not redis.call('HGET', key, 'validated_at') then
  redis.call('HSET', key, 'validated_at', ARGV[2])
end
if (tonumber(redis.call('HGET', key, 'failed')) or 0) > 0 then
  redis.call('HINCRBY', key, 'failed', -1)
end
redis.call('PEXPIRE', key, ARGV[3])
return redis.call('HGETALL', key)
