-- DELETE of a job, atomically by its status and its owners. For an owner (`caller`; '' acts for
-- staff, for everyone): while other owners still want the job, only this owner's interest is
-- withdrawn (it owns the job no more, and its deadline no longer counts: the job's is the latest
-- of the remaining owners', none while one of them set none; a running job's worker is asked to
-- read it again); else a queued job is cancelled at once (it leaves its client's list and the
-- pending set, polls see it canceled, and its event is appended; its id leaves RQ's list when it
-- reaches the head); a running one gets a stop request its worker acts on (and that outlives the
-- worker: the job is not run again after a crash); any other is left alone. To a client that does
-- not own it, a job does not exist.
--- KEYS: job owners deadlines pending inputs canceled events
--- ARGV: job_id caller reason ended_at outcome failure_ttl events_ttl clients_prefix
-- job, owners, deadlines, events: the job's hash, owners, their deadlines, its event stream;
-- pending, inputs, canceled: the type's pending set, stored inputs, canceled registry. reason:
-- the stop's; ended_at: the end stamp; outcome: a canceled job's JSON; clients_prefix: of the
-- type's clients' lists.
-- Answers {ANSWER.withdrawn}, {ANSWER.missing}, {ANSWER.stopping}, {STATUS.canceled} or
-- {ANSWER.done, status} (a done job's status is our state where we keep one).
local fields = redis.call('HMGET', K.job, JOB.status, JOB.state, JOB.owner)
local status = fields[1]
if not status then return {ANSWER.missing} end

local function ask_worker() -- a running job's worker reads its stop field and deadline again
  local worker = redis.call('HGET', K.job, JOB.worker_name)
  if worker and worker ~= '' then
    redis.call('SADD', PREFIX.stop .. worker, A.job_id)
    redis.call('EXPIRE', PREFIX.stop .. worker, STOP_REQUESTS_TTL)
  end
end

if A.caller ~= '' and fields[3] then -- its one owner, named in its hash (else its owners' set)
  if fields[3] ~= A.caller then return {ANSWER.missing} end
elseif A.caller ~= '' then
  if redis.call('SISMEMBER', K.owners, A.caller) == 0 then return {ANSWER.missing} end
  if (status == STATUS.queued or status == STATUS.started) and redis.call('SCARD', K.owners) > 1 then
    redis.call('SREM', K.owners, A.caller)
    redis.call('HDEL', K.deadlines, A.caller)
    local latest = nil
    for _, owner in ipairs(redis.call('SMEMBERS', K.owners)) do
      local deadline = tonumber(redis.call('HGET', K.deadlines, owner) or '') -- NO_DEADLINE, or none kept: none
      if not deadline then
        latest = nil
        break
      end
      if not latest or deadline > latest then latest = deadline end
    end
    if latest then redis.call('HSET', K.job, JOB.deadline, latest)
    else redis.call('HDEL', K.job, JOB.deadline) end
    if status == STATUS.started then ask_worker() end -- no stop field: only a deadline to read again
    return {ANSWER.withdrawn}
  end
end
if status == STATUS.queued then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  local ttl = tonumber(A.failure_ttl)
  local client = redis.call('HGET', K.job, JOB.client)
  redis.call('HSET', K.job, JOB.status, STATUS.canceled, JOB.ended_at, A.ended_at, JOB.outcome, A.outcome)
  redis.call('EXPIRE', K.job, ttl)
  if client then redis.call('LREM', A.clients_prefix .. client, 0, A.job_id) end -- a client's list is bounded by its cap
  redis.call('ZREM', K.pending, A.job_id)
  redis.call('HDEL', K.inputs, A.job_id)
  redis.call('ZADD', K.canceled, now + ttl, A.job_id)
  append_event(redis.call, K.events, A.events_ttl, STATUS.canceled, A.outcome, '')
  return {STATUS.canceled}
end
if status == STATUS.started then
  redis.call('HSET', K.job, JOB.stop, A.reason)
  ask_worker()
  return {ANSWER.stopping}
end
return {ANSWER.done, fields[2] or status}
