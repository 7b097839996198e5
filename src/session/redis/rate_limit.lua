
-- `rate_limit`: GCRA on one key. KEYS[1] the limit's key; ARGV: now ms, emission interval
-- ms, burst tolerance ms.
return gcra(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
