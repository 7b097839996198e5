
-- `begin_send` with its message queued, in one atomic step, where every key lives on one
-- server (one server, or a Sentinel set-up's master): the address's rate limit when given
-- (as rate_limit.lua; a limited request changes nothing), the lookup (as lookup.lua), then
-- the outbox entry, then the session change (as begin.lua). On Redis Cluster the keys are in
-- different slots, and the same is done in steps (see `begin_send_queued_inner`).
-- KEYS[1] lookup, KEYS[2] outbox, KEYS[3] the address's session index, KEYS[4] (optional)
-- the rate limit's key; ARGV: the send_attempt rule's arguments (see above), then the
-- candidate sid, the session key up to the sid ('{prefix}session:{'), the entry's token and
-- client secret (empty for SMS), and with KEYS[4] the limit's now ms, emission interval ms
-- and burst tolerance ms.
-- Returns {'', 'limited', retry_after_ms}, or the sid followed by the rule's decision.
local A = ARGV
if KEYS[4] then
  local limit = gcra(KEYS[4], A[17], A[18], A[19])
  if limit[1] == 0 then return {'', 'limited', string.format('%d', limit[2])} end
end
local sid = redis.call('GET', KEYS[1])
if sid then
  redis.call('PEXPIRE', KEYS[1], A[1])
else
  sid = A[13]
  redis.call('SET', KEYS[1], sid, 'PX', A[1])
end
local key = A[14] .. sid .. '}'
local decision = decide(key, A)
if decision[1] == 'created' or decision[1] == 'continued' then
  -- The entry before the session change, as in the steps: should the change fail, the
  -- entry is an orphan, which a sender drops unsent.
  redis.call('XADD', KEYS[2], '*', 'sid', sid, 'medium', A[3], 'address', A[4],
    'purpose', A[6], 'token', A[15], 'hash', A[10], 'secret', A[16], 'lang', A[12])
  commit(key, A, decision)
  redis.call('SADD', KEYS[3], sid)
  redis.call('PEXPIRE', KEYS[3], tonumber(A[1]) * 2)
end
table.insert(decision, 1, sid)
return decision
