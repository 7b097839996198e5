-- Step 1 of `begin_send`: the sid for a (medium, address, secret), creating it if none.
-- KEYS[1] lookup; ARGV: candidate sid, lifetime ms.
local sid = redis.call('GET', KEYS[1])
if sid then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return sid
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
