-- The `send_attempt` rule (DESIGN §4) on one session hash, shared by begin.lua and
-- begin_queued.lua (each is this file followed by its own). A is the rule's arguments:
-- lifetime ms, now ms, medium, address, secret, purpose, has next_link ('1'/'0'), next_link,
-- send_attempt, token hex, token expiry ms, language.

-- What the request does to the session `key`: {'created'} when there is none (which also
-- heals a crash between the lookup and the session), {'continued', old attempt},
-- {'already'} (send_attempt not above the last), or {'mismatch'}. Reads only.
local function decide(key, A)
  if redis.call('EXISTS', key) == 0 then return {'created'} end
  local s = redis.call('HMGET', key, 'medium', 'address', 'secret', 'attempt', 'purpose')
  if s[1] ~= A[3] or s[2] ~= A[4] or s[3] ~= A[5] or not s[4] or s[5] ~= A[6] then
    return {'mismatch'}
  end
  -- u64 as decimal strings without leading zeros: longer is larger, else compare as text.
  local new, old = A[9], s[4]
  if #new < #old or (#new == #old and new <= old) then return {'already'} end
  return {'continued', old}
end

-- Writes a 'created' or 'continued' decision: the token's hash with its expiry, the attempt,
-- and a lifetime from now. A continued session drops its expired tokens (an SMS session all
-- of them: only the newest code counts), and keeps its expiry once validated (a validated
-- session lives one lifetime from its validation, however often it is continued). The
-- fields are written in one HSET.
local function commit(key, A, decision)
  local extend = true
  local fields
  if decision[1] == 'created' then
    fields = {'medium', A[3], 'address', A[4], 'secret', A[5], 'purpose', A[6],
      'attempt', A[9], 'failed', '0', 'attempt_token', A[10], 't:' .. A[10], A[11],
      'created', A[2], 'lang', A[12]}
  else
    local now = tonumber(A[2])
    local all = A[3] == 'msisdn'
    local existing = redis.call('HGETALL', key)
    for i = 1, #existing, 2 do
      if string.sub(existing[i], 1, 2) == 't:'
        and (all or (tonumber(existing[i + 1]) or 0) <= now) then
        redis.call('HDEL', key, existing[i])
      elseif existing[i] == 'validated_at' then
        extend = false
      end
    end
    fields = {'attempt', A[9], 'attempt_token', A[10], 't:' .. A[10], A[11], 'lang', A[12]}
  end
  if A[7] == '1' then
    table.insert(fields, 'next_link')
    table.insert(fields, A[8])
  end
  redis.call('HSET', key, unpack(fields))
  if extend then redis.call('PEXPIRE', key, A[1]) end
end
