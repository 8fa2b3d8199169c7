-- When jobs end or go back to the queue (in finish_jobs' transaction): settle their clients'
-- accounts in fair order. Each job taken charged its client the worker's estimate; the
-- difference to the worker time it really took is charged now (a job handed back unrun is
-- refunded), and the client's running count drops. Jobs handed back go to the front of their
-- client's list, the client waiting again. The worker no longer holds a long job of anyone's.
-- A client's use is forgotten once it has nothing queued or running and is level with the others.
-- KEYS: the type's waiting clients, their use, their running jobs, the long jobs' holders.
-- ARGV: the prefix of the type's clients' lists, the worker's key, the number of clients N; then
-- N times: client, change of its running count, change of its use (seconds); then per job
-- handed back: client, job id (front-most last).
local waiting, used, running, holders = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, n = ARGV[1], tonumber(ARGV[3])
redis.call('HDEL', holders, ARGV[2])
local clock = tonumber(redis.call('HGET', used, ':clock')) or 0
for i = 4 + 3 * n, #ARGV - 1, 2 do
  local client, id = ARGV[i], ARGV[i + 1]
  redis.call('LPUSH', prefix .. client, id)
  if not redis.call('ZSCORE', waiting, client) then
    local score = math.max(clock, tonumber(redis.call('HGET', used, client)) or 0)
    redis.call('HSET', used, client, score)
    redis.call('ZADD', waiting, score, client)
  end
end
for j = 0, n - 1 do
  local client = ARGV[4 + 3 * j]
  local left = redis.call('HINCRBY', running, client, ARGV[5 + 3 * j])
  if left <= 0 then redis.call('HDEL', running, client) end
  local use = tonumber(redis.call('HINCRBYFLOAT', used, client, ARGV[6 + 3 * j]))
  if redis.call('ZSCORE', waiting, client) then
    redis.call('ZADD', waiting, use, client)
  elseif left <= 0 and use <= clock then
    redis.call('HDEL', used, client)
  end
end
return 1
