-- `undo_send` on the session. A created session goes unless a later send continued it; a
-- continued one gets its old attempt back if this send is still the one that set it.
-- KEYS[1] session; ARGV: token hex, created ('1'/'0'), previous attempt ('' if none).
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'gone'} end
redis.call('HDEL', key, 't:' .. ARGV[1])
if ARGV[2] == '1' then
  local tokens = 0
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 2) == 't:' then tokens = tokens + 1 end
  end
  if tokens == 0 then
    local s = redis.call('HMGET', key, 'medium', 'address', 'secret', 'purpose')
    redis.call('DEL', key)
    return {'deleted', s[1] or '', s[2] or '', s[3] or '', s[4] or ''}
  end
end
if redis.call('HGET', key, 'attempt_token') == ARGV[1] then
  if ARGV[3] ~= '' then redis.call('HSET', key, 'attempt', ARGV[3]) end
  redis.call('HDEL', key, 'attempt_token')
end
return {'kept'}
