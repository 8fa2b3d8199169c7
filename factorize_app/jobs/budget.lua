-- Charge a client's budget for new jobs, or refuse: one atomic step, so concurrent submits of one
-- client cannot pass it together.
-- KEYS: the client's expiry-slot counters, from the current slot to the furthest a job may reach.
-- ARGV: bytes to charge, the budget, the index in KEYS of the slot to charge, when that slot
-- expires (unix seconds).
-- Returns {1, bytes held after the charge} or {0, bytes held, index of the first slot holding any}.
local held, first = 0, 0
for index, key in ipairs(KEYS) do
  local value = tonumber(redis.call('GET', key) or '0')
  if value > 0 and first == 0 then
    first = index
  end
  held = held + value
end
local charge = tonumber(ARGV[1])
if held + charge > tonumber(ARGV[2]) then
  return {0, held, first}
end
local target = KEYS[tonumber(ARGV[3])]
redis.call('INCRBY', target, charge)
redis.call('EXPIREAT', target, ARGV[4])
return {1, held + charge}
