-- Live pending = queued jobs whose deadline is ahead + running jobs. With `workers` (the queue's
-- worker set), also each registered worker's last heartbeat (RQ's timestamp; '' if none) and Redis
-- time, for the caller to count the workers that beat lately. Read-only: it answers on a full Redis.
-- Queued jobs that expired while nothing served the queue (the clock is stale, or a recorded
-- outage is not swept yet) still count: the next worker's sweep enqueues them again (maintenance.py).
--- KEYS: pending started clock outages workers?
--- ARGV:
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local since = now
local last = tonumber(redis.call('GET', K.clock) or '')
if last and now - last > OUTAGE_GAP then since = last end
for _, outage in ipairs(redis.call('LRANGE', K.outages, 0, -1)) do
  local start = tonumber(string.match(outage, '^(%S+)'))
  if start and start < since then since = start end
end
local counts = {redis.call('ZCOUNT', K.pending, '(' .. since, '+inf'), redis.call('ZCARD', K.started)}
if K.workers then
  local beats = {}
  for _, worker_key in ipairs(redis.call('SMEMBERS', K.workers)) do
    local fields = redis.call('HMGET', worker_key, WORKER.last_heartbeat, WORKER.death)
    if fields[1] and not fields[2] then beats[#beats + 1] = fields[1] end
  end
  counts[3] = t[1]
  counts[4] = beats
end
return counts
