-- Worker maintenance: count each client's running jobs of a type afresh from RQ's
-- StartedJobRegistry (its live executions), so the counts stay right when a worker died with
-- jobs (RQ's own cleanup, not ours, ended or re-queued them, and nothing settled them).
--- KEYS: started running
--- ARGV:
-- started: the type's StartedJobRegistry; running: its clients' running counts.
local counts = {}
for _, member in ipairs(redis.call('ZRANGE', K.started, 0, -1)) do
  local id = string.match(member, '^(.*):[^:]*$') or member
  local fields = redis.call('HMGET', PREFIX.job .. id, JOB.status, JOB.client)
  if fields[1] == STATUS.started and fields[2] then counts[fields[2]] = (counts[fields[2]] or 0) + 1 end
end
redis.call('DEL', K.running)
for client, count in pairs(counts) do redis.call('HSET', K.running, client, count) end
return 1
