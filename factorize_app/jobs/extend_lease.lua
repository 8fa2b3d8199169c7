-- Renew leases: per job, the execution's EXPIRE, then its deadline in the StartedJobRegistry. A
-- full Redis refuses a script's memory-growing command only before the script's first write, and
-- EXPIRE is not one: so a lease (which grows nothing) is renewed on a full Redis too, and a job
-- whose results wait for room to be recorded is not taken for abandoned meanwhile.
-- KEYS: per job, its StartedJobRegistry and its execution's hash.
-- ARGV: the lease (seconds), then per job its member in the registry.
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('EXPIRE', KEYS[2 * i - 2], ARGV[1])
  redis.call('ZADD', KEYS[2 * i - 3], 'XX', deadline, ARGV[i])
end
return 1
