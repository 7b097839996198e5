-- Reserves one submit attempt and returns the token hashes to compare against.
-- KEYS[1] session; ARGV: secret hex, max attempts.
local key = KEYS[1]
local s = redis.call('HMGET', key, 'secret', 'failed', 'validated_at')
if s[1] ~= ARGV[1] then return {'none'} end
local failed = tonumber(s[2])
if not failed then return {'corrupt'} end
if failed >= tonumber(ARGV[2]) then return {'too_many'} end
if s[3] then return {'validated'} end
local out = {'reserved', tostring(redis.call('HINCRBY', key, 'failed', 1))}
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 't:' then
    out[#out + 1] = string.sub(fields[i], 3)
    out[#out + 1] = fields[i + 1]
  end
end
return out
