-- After jobs are enqueued in RQ's list: with a client name (fair order), also line them up in the
-- client's own list, tag each job with its client, and make the client a waiting one if it was
-- not: it joins at the use of the client served last, or its own if higher, so time away banks
-- no credit (a client is waiting exactly while its list is not empty). Record the client's own
-- cap on running jobs, if it has one. Then wake a worker.
-- KEYS: the type's waiting clients, their use, the client's list, the type's wake-up list, the
-- clients' caps.
-- ARGV: the client ('' in FIFO order), the wake-up tokens kept at most, the job hash prefix, the
-- client's cap on running jobs ('' for the default), the job ids.
local waiting, used, client_list, wake, caps = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local client, job_prefix = ARGV[1], ARGV[3]
if client ~= '' then
  local before = redis.call('LLEN', client_list)
  for i = 5, #ARGV do
    local key = job_prefix .. ARGV[i]
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'factorize_client', client)
      redis.call('RPUSH', client_list, ARGV[i])
    end
  end
  if before == 0 and redis.call('LLEN', client_list) > 0 then
    local level = tonumber(redis.call('HGET', used, ':clock')) or 0
    local own = tonumber(redis.call('HGET', used, client)) or 0
    local score = math.max(level, own)
    redis.call('HSET', used, client, score)
    redis.call('ZADD', waiting, score, client)
  end
  if ARGV[4] ~= '' then redis.call('HSET', caps, client, ARGV[4]) else redis.call('HDEL', caps, client) end
end
redis.call('LPUSH', wake, 1)
redis.call('LTRIM', wake, 0, tonumber(ARGV[2]) - 1)
return 1
