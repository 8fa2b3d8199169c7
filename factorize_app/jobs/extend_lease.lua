-- Renew leases: per job, the execution's EXPIRE, then its deadline in the StartedJobRegistry. A
-- full Redis refuses a script's memory-growing command only before the script's first write, and
-- EXPIRE is not one: so a lease (which grows nothing) is renewed on a full Redis too, and a job
-- whose results wait for room to be recorded is not taken for abandoned meanwhile.
--- KEYS: jobs[started execution]
--- ARGV: lease jobs[member]
-- Per job: its StartedJobRegistry, its execution's hash, its member in the registry.
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(A.lease)
for _, job in ipairs(jobs) do
  redis.call('EXPIRE', job.execution, A.lease)
  redis.call('ZADD', job.started, 'XX', deadline, job.member)
end
return 1
