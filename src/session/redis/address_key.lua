-- The store's address-hash key: the one already there, or this candidate, kept for good.
-- KEYS[1] the key's key; ARGV: a random candidate (hex). Returns the key (hex).
local key = redis.call('GET', KEYS[1])
if key then return key end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
