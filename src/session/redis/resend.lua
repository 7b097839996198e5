-- The admin API's retry of a dead letter: a new token in its session, if the session can
-- still use one. KEYS[1] session, KEYS[2] its resend key (the client secret an email link
-- needs; same slot); ARGV: token hex, token expiry ms, lifetime ms.
-- Returns {'gone'}, {'validated'}, or {'ok', medium, address, purpose, language, secret}.
local s = redis.call('HMGET', KEYS[1], 'medium', 'address', 'purpose', 'lang', 'validated_at')
if not s[1] then return {'gone'} end
if s[5] then return {'validated'} end
local secret = ''
if s[1] == 'email' then
  secret = redis.call('GET', KEYS[2])
  if not secret then return {'gone'} end
end
-- As a new send: only the newest SMS code counts, and the session lives a lifetime from now.
if s[1] == 'msisdn' then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(f, 1, 2) == 't:' then redis.call('HDEL', KEYS[1], f) end
  end
end
redis.call('HSET', KEYS[1], 't:' .. ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'ok', s[1], s[2], s[3], s[4] or '', secret}
