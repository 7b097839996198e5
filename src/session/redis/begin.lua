
-- Step 2 of `begin_send`: create the session, or continue it under the `send_attempt` rule.
-- KEYS[1] session; ARGV: the rule's arguments (see above).
local decision = decide(KEYS[1], ARGV)
if decision[1] == 'created' or decision[1] == 'continued' then
  commit(KEYS[1], ARGV, decision)
end
return decision
