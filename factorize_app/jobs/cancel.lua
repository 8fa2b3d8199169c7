-- DELETE of a job, atomically by its status: a queued job is cancelled at once (it leaves its
-- queue, and polls see it canceled); a running one gets a stop request its worker acts on (and
-- that outlives the worker: the job is not run again after a crash); any other is left alone.
-- KEYS: the job hash, the type's RQ list, its pending set, its stored inputs, its canceled
-- registry. ARGV: the job id, the failure TTL, the end stamp, the stop requests' key prefix, a
-- canceled job's outcome JSON, the stop's reason.
-- Answers {'canceled'}, {'stopping'}, {'missing'} or {'done', status}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status == 'queued' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  local ttl = tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[3], 'factorize_outcome', ARGV[5])
  redis.call('HDEL', KEYS[1], 'factorize_fair')
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('LREM', KEYS[2], 0, ARGV[1])
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
return {'done', status}
