-- Live pending = queued jobs whose deadline is ahead + running jobs. With a third key (the queue's
-- worker set), also each registered worker's last heartbeat (RQ's timestamp; '' if none) and Redis
-- time, for the caller to count the workers that beat lately. Read-only: it answers on a full Redis.
-- KEYS: the type's pending set, its StartedJobRegistry[, its workers set].
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local counts = {redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), redis.call('ZCARD', KEYS[2])}
if KEYS[3] then
  local beats = {}
  for _, worker_key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local fields = redis.call('HMGET', worker_key, 'last_heartbeat', 'death')
    if fields[1] and not fields[2] then beats[#beats + 1] = fields[1] end
  end
  counts[3] = t[1]
  counts[4] = beats
end
return counts
