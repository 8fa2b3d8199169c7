-- Worker maintenance: count each client's running jobs of a type afresh from RQ's
-- StartedJobRegistry (its live executions), so the counts stay right when a worker died with
-- jobs (RQ's own cleanup, not ours, ended or re-queued them, and nothing settled them).
-- KEYS: the type's StartedJobRegistry, its clients' running counts.
-- ARGV: the job hash prefix.
local counts = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local id = string.match(member, '^(.*):[^:]*$') or member
  local fields = redis.call('HMGET', ARGV[1] .. id, 'status', 'factorize_client')
  if fields[1] == 'started' and fields[2] then counts[fields[2]] = (counts[fields[2]] or 0) + 1 end
end
redis.call('DEL', KEYS[2])
for client, count in pairs(counts) do redis.call('HSET', KEYS[2], client, count) end
return 1
