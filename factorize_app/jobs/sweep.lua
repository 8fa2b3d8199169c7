-- The workers' sweep of one task type's queued jobs (after the clock tick).
-- KEYS: the type's pending set, its stored inputs, the clock, the outages.
-- ARGV: the start of the outage to recover ('' for none), JOB_TTL, the most jobs to look at, the
-- outage gap, the job hash prefix.
-- Jobs whose deadline passed are looked at: one whose hash expired during the outage (its
-- deadline after the outage's start) is answered with its stored input, for the caller to
-- enqueue again; the input and deadline of any other expired job (gone, or no longer queued) are
-- forgotten, and a job still queued gets the deadline of its hash's TTL.
local now = clock_tick(KEYS[3], KEYS[4], ARGV[4])
local pending, inputs = KEYS[1], KEYS[2]
local outage_start = tonumber(ARGV[1])
local job_prefix = ARGV[5]
local restore = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', pending, '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))) do
  restore[#restore + 1] = id
end
local answer = {}
for i = 1, #restore, 2 do
  local id, deadline = restore[i], tonumber(restore[i + 1])
  local key = job_prefix .. id
  local status = redis.call('HGET', key, 'status')
  if status == 'queued' then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then ttl = tonumber(ARGV[2]) end
    redis.call('ZADD', pending, now + ttl, id)
  elseif not status and outage_start and deadline > outage_start and redis.call('HEXISTS', inputs, id) == 1 then
    answer[#answer + 1] = {id, redis.call('HGET', inputs, id)}
    redis.call('ZADD', pending, now + tonumber(ARGV[2]), id)
  else
    redis.call('ZREM', pending, id)
    redis.call('HDEL', inputs, id)
  end
end
return answer
