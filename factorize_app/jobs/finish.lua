-- A batch's outcomes recorded as RQ records them (in finish_jobs' transaction), in one call: per
-- job, its hash (status, end, the JSON polls answer; no progress or stop request left), its TTL,
-- its event, its entry in RQ's result stream, its registry, and its execution ended (and gone
-- from the worker's execution index).
--- KEYS: executions
--- ARGV: ended_at jobs[id status state outcome ttl events_ttl registry also started execution score #entry]
-- executions: the worker's execution index; ended_at: the end stamp. Per job: RQ's status, our
-- state ('' where RQ's says it all), the outcome JSON, its TTL and its event stream's, its
-- registry, a second registry ('' for none), its StartedJobRegistry, its execution, the
-- registries' score, and its result entry's fields and values.
for _, job in ipairs(jobs) do
  local key = PREFIX.job .. job.id
  redis.call('HSET', key, JOB.status, job.status, JOB.ended_at, A.ended_at, JOB.outcome, job.outcome)
  if job.state ~= '' then redis.call('HSET', key, JOB.state, job.state) end
  redis.call('HDEL', key, JOB.progress, JOB.stop)
  redis.call('EXPIRE', key, job.ttl)
  append_event(redis.call, PREFIX.events .. job.id, job.events_ttl, job.state ~= '' and job.state or job.status,
    job.outcome, '')
  local results = PREFIX.results .. job.id
  redis.call('XADD', results, 'MAXLEN', '~', RESULTS_MAXLEN, '*', unpack(job.entry))
  redis.call('EXPIRE', results, job.ttl)
  redis.call('ZADD', job.registry, job.score, job.id)
  if job.also ~= '' then redis.call('ZADD', job.also, job.score, job.id) end
  redis.call('ZREM', job.started, job.execution)
  redis.call('DEL', PREFIX.execution .. job.execution)
  redis.call('SREM', K.executions, job.execution)
end
return 1
