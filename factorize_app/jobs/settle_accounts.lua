-- Fair order's accounts settled when jobs end or go back to the queue (settle.lua, finish.lua).
-- Each job taken charged its client the worker's estimate; the difference to the worker time it
-- really took is charged now (a job handed back unrun is refunded), and the client's running count
-- drops. Jobs handed back go to the front of their client's list, the client waiting again. The
-- worker no longer holds a long job of anyone's. A client's use is forgotten once it has nothing
-- queued or running and is level with the others. Per account {client, running, use}; per job
-- handed back (front-most last) {client, id}.
local function settle_accounts(waiting, used, running, holders, worker, clients_prefix, accounts, handed_back)
  redis.call('HDEL', holders, worker)
  local clock = tonumber(redis.call('HGET', used, FAIR_CLOCK)) or 0
  for _, job in ipairs(handed_back) do
    redis.call('LPUSH', clients_prefix .. job.client, job.id)
    if not redis.call('ZSCORE', waiting, job.client) then
      local score = math.max(clock, tonumber(redis.call('HGET', used, job.client)) or 0)
      redis.call('HSET', used, job.client, score)
      redis.call('ZADD', waiting, score, job.client)
    end
  end
  for _, account in ipairs(accounts) do
    local client = account.client
    local left = redis.call('HINCRBY', running, client, account.running)
    if left <= 0 then redis.call('HDEL', running, client) end
    local use = tonumber(redis.call('HINCRBYFLOAT', used, client, account.use))
    if redis.call('ZSCORE', waiting, client) then
      redis.call('ZADD', waiting, use, client)
    elseif left <= 0 and use <= clock then
      redis.call('HDEL', used, client)
    end
  end
end
