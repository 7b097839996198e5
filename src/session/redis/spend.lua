-- One unit of a budget shared by every replica, counted in a fixed window: the key counts up to
-- the limit and expires when the window ends. A request over the limit is not counted.
-- KEYS[1] the budget's key; ARGV: limit, the window's end (unix ms). Returns 1 if spent, else 0.
local spent = redis.call('INCR', KEYS[1])
if spent == 1 then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
if spent > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
