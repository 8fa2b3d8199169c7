-- What RQ and its tools did to a type's jobs behind the service's back, found by one process at a
-- time (a lock that lasts `lock_ms`): RQ's cleanup failing or re-queuing an abandoned job, `rq
-- requeue` or the dashboard re-queuing a failed one, `rq empty` deleting queued jobs, a stock
-- RQ worker running one. Three looks, each bounded:
-- 1. The jobs that left RQ's StartedJobRegistry since the last look (a snapshot of its job ids
--    is kept; a worker recording jobs takes them out of it, finish.lua): each whose status
--    differs from its last event is answered.
-- 2. A chunk of the pending set (a cursor walks it): ids no longer queued leave it and their
--    stored inputs (no phantom load); those that still exist and whose status differs from their
--    last event are answered.
-- 3. The tail of RQ's list and a chunk of the rest (another cursor): a queued job the pending set
--    does not hold was re-queued by RQ: it joins the pending set (with its hash's TTL) and the
--    stored inputs, and gets its `queued` event here.
-- The caller appends the answered events (reconcile_event.lua), as only it can read RQ's results.
--- KEYS: lock snapshot started pending inputs list cursors
--- ARGV: lock_ms chunk tail job_ttl
-- lock: held for `lock_ms`; snapshot: the job ids of the StartedJobRegistry at the last look;
-- started, pending, inputs, list: the type's StartedJobRegistry, pending set, stored inputs and
-- RQ's list; cursors: a hash. chunk, tail: the ids looked at per look, and of the list's tail.
-- Answers false (another process holds the lock) or {{id, status}...}.
if not redis.call('SET', K.lock, 1, 'NX', 'PX', A.lock_ms) then return false end
local snapshot, started, pending, inputs, list, cursors = K.snapshot, K.started, K.pending, K.inputs, K.list, K.cursors
local chunk, tail = tonumber(A.chunk), tonumber(A.tail)
local job_ttl = tonumber(A.job_ttl)
local seen, found = {}, {}

-- A job's status as clients see it (our state where we keep one), and RQ's.
local function status_of(id)
  local fields = redis.call('HMGET', PREFIX.job .. id, JOB.status, JOB.state, JOB.description, JOB.client)
  return fields[2] or fields[1], fields[1], fields[3], fields[4]
end

local function last_event(id)
  return last_event_status(PREFIX.events .. id)
end

-- `status`: as status_of read it, if it was.
local function consider(id, status)
  if seen[id] then return end
  seen[id] = true
  local last = last_event(id)
  if last == false then return end -- nobody reads its events
  status = status or status_of(id)
  if status and status ~= STATUS.queued and status ~= last then found[#found + 1] = {id, status} end
end

local function add_all(key, members)
  for i = 1, #members, 1000 do
    redis.call('SADD', key, unpack(members, i, math.min(i + 999, #members)))
  end
end

-- A queued job the pending set does not hold (RQ queued it): it joins it, with its event.
local now = tonumber(redis.call('TIME')[1])
local function requeued(id)
  if seen[id] then return end
  seen[id] = true
  if redis.call('ZSCORE', pending, id) then return end
  local status, rq_status, description, client = status_of(id)
  if rq_status ~= STATUS.queued or not description then return end
  local ttl = redis.call('TTL', PREFIX.job .. id)
  if ttl < 0 then ttl = job_ttl end
  redis.call('ZADD', pending, now + ttl, id)
  local text = string.match(description, '^[^ ]* (.*)$')
  if text then redis.call('HSET', inputs, id, string.gsub(client or '', ' ', '_') .. ' ' .. text) end
  if last_event(id) ~= STATUS.queued then
    append_event(redis.call, PREFIX.events .. id, ttl, STATUS.queued, '', '')
  end
end

-- 1. Left the StartedJobRegistry (failed, finished, or re-queued by RQ's cleanup).
local running, ids = {}, {}
for _, member in ipairs(redis.call('ZRANGE', started, 0, -1)) do
  local id = string.match(member, '^(.*):[^:]*$') or member
  if not running[id] then
    running[id] = true
    ids[#ids + 1] = id
  end
end
for _, id in ipairs(redis.call('SMEMBERS', snapshot)) do
  if not running[id] then
    local status, rq_status = status_of(id)
    if rq_status == STATUS.queued then requeued(id) else consider(id, status) end
  end
end
redis.call('DEL', snapshot)
add_all(snapshot, ids)

-- 2. No longer queued. A job whose hash is gone by its deadline expired (no one polled it) and is
-- left to the workers' sweep, which enqueues it again if the queue was unserved meanwhile (an
-- outage, see maintenance.py) and forgets it otherwise; one gone before its deadline was deleted.
-- Every queued job is in RQ's list: an empty list (`rq empty`) means nothing the pending set holds
-- is queued, so a larger chunk is looked at.
local offset = tonumber(redis.call('HGET', cursors, 'pending')) or 0
local pending_chunk = redis.call('LLEN', list) == 0 and 20 * chunk or chunk
local members = redis.call('ZRANGE', pending, offset, offset + pending_chunk - 1, 'WITHSCORES')
local dropped = 0
for i = 1, #members, 2 do
  local id, deadline = members[i], tonumber(members[i + 1])
  local status, rq_status = status_of(id)
  if rq_status ~= STATUS.queued and (rq_status or deadline > now + 1) then
    redis.call('ZREM', pending, id)
    redis.call('HDEL', inputs, id)
    dropped = dropped + 1
    if status then consider(id, status) end -- run by another worker class, or ended
  end
end
redis.call('HSET', cursors, 'pending', #members < 2 * pending_chunk and 0 or offset + #members / 2 - dropped)

-- 3. Queued by RQ.
for _, id in ipairs(redis.call('LRANGE', list, -tail, -1)) do requeued(id) end
offset = tonumber(redis.call('HGET', cursors, 'list')) or 0
members = redis.call('LRANGE', list, offset, offset + chunk - 1)
for _, id in ipairs(members) do requeued(id) end
redis.call('HSET', cursors, 'list', #members < chunk and 0 or offset + #members)
return found
