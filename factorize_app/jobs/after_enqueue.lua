-- After jobs are enqueued in RQ's list: with a client name (fair order), also line them up in the
-- client's own list, tag each job with its client, and make the client a waiting one if it was
-- not: it joins at the use of the client served last, or its own if higher, so time away banks
-- no credit (a client is waiting exactly while its list is not empty). Record the client's own
-- cap on running jobs, if it has one. Then wake a worker.
--- KEYS: waiting used client_list wake caps
--- ARGV: client cap ids*
-- waiting, used, caps: the type's waiting clients, their use, their caps; client_list: the
-- client's list; wake: the type's wake-up list. client: '' in FIFO order; cap: the client's own
-- cap on running jobs ('' for the default); ids: the jobs.
if A.client ~= '' then
  local before = redis.call('LLEN', K.client_list)
  for _, id in ipairs(ids) do
    local key = PREFIX.job .. id
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, JOB.client, A.client)
      redis.call('RPUSH', K.client_list, id)
    end
  end
  if before == 0 and redis.call('LLEN', K.client_list) > 0 then
    local level = tonumber(redis.call('HGET', K.used, FAIR_CLOCK)) or 0
    local own = tonumber(redis.call('HGET', K.used, A.client)) or 0
    local score = math.max(level, own)
    redis.call('HSET', K.used, A.client, score)
    redis.call('ZADD', K.waiting, score, A.client)
  end
  if A.cap ~= '' then redis.call('HSET', K.caps, A.client, A.cap) else redis.call('HDEL', K.caps, A.client) end
end
redis.call('LPUSH', K.wake, 1)
redis.call('LTRIM', K.wake, 0, WAKE_TOKENS - 1)
return 1
