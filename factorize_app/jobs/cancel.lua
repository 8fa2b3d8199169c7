-- DELETE of a job, atomically by its status and its owners. For an owner (ARGV[7]; '' acts for
-- staff, for everyone): while other owners still want the job, only this owner's interest is
-- withdrawn (it owns the job no more, and its deadline no longer counts: the job's is the latest
-- of the remaining owners', none while one of them set none; a running job's worker is asked to
-- read it again); else a queued job is cancelled at once (it leaves its client's list and the pending
-- set, and polls see it canceled; its id leaves RQ's list when it reaches the head); a running
-- one gets a stop request its worker acts on (and that outlives the worker: the job is not run
-- again after a crash); any other is left alone. To a client that does not own it, a job does
-- not exist.
-- KEYS: the job hash, its owners, the type's pending set, its stored inputs, its canceled
-- registry, the owners' deadlines. ARGV: the job id, the failure TTL, the end stamp, the stop requests' key prefix, a
-- canceled job's outcome JSON, the stop's reason, the caller, the prefix of the type's clients'
-- lists, our state field (a done job's status is our state where we keep one).
-- Answers {'canceled'}, {'stopping'}, {'withdrawn'}, {'missing'} or {'done', status}.
local fields = redis.call('HMGET', KEYS[1], 'status', ARGV[9])
local status = fields[1]
if not status then return {'missing'} end
local caller = ARGV[7]
if caller ~= '' then
  if redis.call('SISMEMBER', KEYS[2], caller) == 0 then return {'missing'} end
  if (status == 'queued' or status == 'started') and redis.call('SCARD', KEYS[2]) > 1 then
    redis.call('SREM', KEYS[2], caller)
    redis.call('HDEL', KEYS[6], caller)
    local latest = nil
    for _, owner in ipairs(redis.call('SMEMBERS', KEYS[2])) do
      local deadline = tonumber(redis.call('HGET', KEYS[6], owner) or '') -- 'none', or none kept: none
      if not deadline then
        latest = nil
        break
      end
      if not latest or deadline > latest then latest = deadline end
    end
    if latest then redis.call('HSET', KEYS[1], 'factorize_deadline', latest)
    else redis.call('HDEL', KEYS[1], 'factorize_deadline') end
    local worker = redis.call('HGET', KEYS[1], 'worker_name')
    if status == 'started' and worker and worker ~= '' then -- no stop field: only a deadline to read again
      redis.call('SADD', ARGV[4] .. worker, ARGV[1])
      redis.call('EXPIRE', ARGV[4] .. worker, 3600)
    end
    return {'withdrawn'}
  end
end
if status == 'queued' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  local ttl = tonumber(ARGV[2])
  local client = redis.call('HGET', KEYS[1], 'factorize_client')
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[3], 'factorize_outcome', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ttl)
  if client then redis.call('LREM', ARGV[8] .. client, 0, ARGV[1]) end -- a client's list is bounded by its cap
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
  redis.call('ZADD', KEYS[5], now + ttl, ARGV[1])
  return {'canceled'}
end
if status == 'started' then
  redis.call('HSET', KEYS[1], 'factorize_stop', ARGV[6])
  local worker = redis.call('HGET', KEYS[1], 'worker_name')
  if worker and worker ~= '' then
    redis.call('SADD', ARGV[4] .. worker, ARGV[1])
    redis.call('EXPIRE', ARGV[4] .. worker, 3600)
  end
  return {'stopping'}
end
return {'done', fields[2] or status}
