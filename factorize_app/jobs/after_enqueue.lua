-- After jobs are enqueued in RQ's list: with a client name (fair order), also line them up in the
-- client's own list, and put the client in the type's round-robin ring if it was not waiting
-- already (a client is in the ring exactly while its list is not empty). Then wake a worker.
-- KEYS: the type's fair ring, the client's list, the type's wake-up list.
-- ARGV: the client ('' in FIFO order), the wake-up tokens kept at most, the job hash prefix, the
-- job ids.
local ring, client_list, wake, client = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local job_prefix = ARGV[3]
if client ~= '' then
  local before = redis.call('LLEN', client_list)
  for i = 4, #ARGV do
    local key = job_prefix .. ARGV[i]
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'factorize_fair', '1')
      redis.call('RPUSH', client_list, ARGV[i])
    end
  end
  if before == 0 and redis.call('LLEN', client_list) > 0 then redis.call('RPUSH', ring, client) end
end
redis.call('LPUSH', wake, 1)
redis.call('LTRIM', wake, 0, tonumber(ARGV[2]) - 1)
return 1
