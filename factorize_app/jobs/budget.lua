-- Charge a client's budget for new jobs, or refuse: one atomic step, so concurrent submits of one
-- client cannot pass it together.
--- KEYS: slots*
--- ARGV: charge budget target expires
-- slots: the client's expiry-slot counters, from the current slot to the furthest a job may
-- reach. charge: bytes to charge; target: the index in slots of the slot to charge; expires: when
-- that slot expires (Unix seconds).
-- Returns {1, bytes held after the charge} or {0, bytes held, index of the first slot holding any}.
local held, first = 0, 0
for index, key in ipairs(slots) do
  local value = tonumber(redis.call('GET', key) or '0')
  if value > 0 and first == 0 then
    first = index
  end
  held = held + value
end
local charge = tonumber(A.charge)
if held + charge > tonumber(A.budget) then
  return {0, held, first}
end
local target = slots[tonumber(A.target)]
redis.call('INCRBY', target, charge)
redis.call('EXPIREAT', target, A.expires)
return {1, held + charge}
