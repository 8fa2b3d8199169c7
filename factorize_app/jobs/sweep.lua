-- The workers' sweep of one task type's queued jobs (after the clock tick).
--- KEYS: pending inputs clock outages
--- ARGV: outage_start job_ttl limit
-- pending, inputs: the type's pending set and stored inputs. outage_start: the start of the
-- outage to recover ('' for none); limit: the most jobs to look at.
-- Jobs whose deadline passed are looked at: one whose hash expired during the outage (its
-- deadline after the outage's start) is answered with its stored input, for the caller to
-- enqueue again; the input and deadline of any other expired job (gone, or no longer queued) are
-- forgotten, and a job still queued gets the deadline of its hash's TTL.
local now = clock_tick(K.clock, K.outages)
local pending, inputs = K.pending, K.inputs
local outage_start = tonumber(A.outage_start)
local restore = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', pending, '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(A.limit))) do
  restore[#restore + 1] = id
end
local answer = {}
for i = 1, #restore, 2 do
  local id, deadline = restore[i], tonumber(restore[i + 1])
  local key = PREFIX.job .. id
  local status = redis.call('HGET', key, JOB.status)
  if status == STATUS.queued then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then ttl = tonumber(A.job_ttl) end
    redis.call('ZADD', pending, now + ttl, id)
  elseif not status and outage_start and deadline > outage_start and redis.call('HEXISTS', inputs, id) == 1 then
    answer[#answer + 1] = {id, redis.call('HGET', inputs, id)}
    redis.call('ZADD', pending, now + tonumber(A.job_ttl), id)
  else
    redis.call('ZREM', pending, id)
    redis.call('HDEL', inputs, id)
  end
end
return answer
