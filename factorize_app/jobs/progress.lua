-- Running jobs' latest progress, in one round trip: written to each job's hash and appended to
-- its event stream, only while the job is still started. The worker records results and writes
-- progress at different moments, so a report may arrive after its job's end: it is dropped, and
-- no event ever follows a job's done event.
-- KEYS: per job, its hash and its event stream. ARGV: the hash's progress field, the stream's
-- MAXLEN, then per job its progress JSON and its stream's TTL.
local field, maxlen = ARGV[1], ARGV[2]
for i = 1, #KEYS, 2 do
  local value, ttl = ARGV[2 + i], ARGV[3 + i]
  if redis.call('HGET', KEYS[i], 'status') == 'started' then
    redis.call('HSET', KEYS[i], field, value)
    append_event(redis.call, KEYS[i + 1], maxlen, ttl, 'started', '', value)
  end
end
return #KEYS / 2
