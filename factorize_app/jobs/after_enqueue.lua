-- After jobs are enqueued in RQ's list, in the same transaction: give each its deadline in the
-- type's pending set and tag it with its owner (its only one: the owners become a set of their
-- own only when a second one joins, poll.lua), its Cancel-After deadline (from this instant, to
-- the microsecond) and, in fair order, its client. With a client name (fair order), also line
-- them up in the client's own list, and make the client a waiting one if it was not: it joins at
-- the use of the client served last, or its own if higher, so time away banks no credit (a client
-- is waiting exactly while its list is not empty). Record the client's own cap on running jobs,
-- if it has one. Then wake a worker.
--- KEYS: pending waiting used client_list wake caps
--- ARGV: owner client cap job_ttl cancel_after ids*
-- pending: the type's pending set (queued ids scored by expiry); waiting, used, caps: the type's
-- waiting clients, their use, their caps; client_list: the client's list; wake: the type's
-- wake-up list. owner: the jobs' owner; client: '' in FIFO order; cap: the client's own cap on
-- running jobs ('' for the default); job_ttl: a queued job's; cancel_after: seconds ('' for
-- none); ids: the jobs (their hashes written in this transaction).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local expiry = now + tonumber(A.job_ttl)
local tags = {JOB.owner, A.owner}
if A.client ~= '' then tags[#tags + 1], tags[#tags + 2] = JOB.client, A.client end
if A.cancel_after ~= '' then tags[#tags + 1], tags[#tags + 2] = JOB.deadline, now + tonumber(A.cancel_after) end
for _, id in ipairs(ids) do
  redis.call('HSET', PREFIX.job .. id, unpack(tags))
end
local CHUNK = 1000 -- values a command is given at once (Lua's unpack has a limit)
for first = 1, #ids, CHUNK do
  local scored = {}
  for i = first, math.min(#ids, first + CHUNK - 1) do
    scored[#scored + 1], scored[#scored + 2] = expiry, ids[i]
  end
  redis.call('ZADD', K.pending, unpack(scored))
end
if A.client ~= '' then
  local before = redis.call('LLEN', K.client_list)
  for first = 1, #ids, CHUNK do
    redis.call('RPUSH', K.client_list, unpack(ids, first, math.min(#ids, first + CHUNK - 1)))
  end
  if before == 0 then
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
