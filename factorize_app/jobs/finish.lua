-- A batch's outcomes recorded as RQ records them (in finish_jobs' transaction), in one call: per
-- job, its hash (status, end, the JSON polls answer; no progress or stop request left), its TTL,
-- its event, its entry in RQ's result stream, its registry, and its execution ended.
-- ARGV: the end stamp, the job hash prefix, the result stream prefix, the event stream prefix, the
-- execution hash prefix, the progress field, the stop field, the event stream's length; then per
-- job: id, status, outcome JSON, TTL, the event stream's TTL, its registry, a second registry
-- ('' for none), its StartedJobRegistry, its execution, the registries' score, the number N of
-- result entry fields, then N field and value pairs.
local ended_at, job_prefix, results_prefix, events_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local execution_prefix, progress_field, stop_field, events_maxlen = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local i = 9
while i <= #ARGV do
  local id, status, outcome, ttl, events_ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local registry, also, started, execution, score = ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
  local n = tonumber(ARGV[i + 10])
  local key = job_prefix .. id
  redis.call('HSET', key, 'status', status, 'ended_at', ended_at, 'factorize_outcome', outcome)
  redis.call('HDEL', key, progress_field, stop_field)
  redis.call('EXPIRE', key, ttl)
  append_event(redis.call, events_prefix .. id, events_maxlen, events_ttl, status, outcome, '')
  local entry = {}
  for f = i + 11, i + 10 + 2 * n do entry[#entry + 1] = ARGV[f] end
  local results = results_prefix .. id
  redis.call('XADD', results, 'MAXLEN', '~', 10, '*', unpack(entry))
  redis.call('EXPIRE', results, ttl)
  redis.call('ZADD', registry, score, id)
  if also ~= '' then redis.call('ZADD', also, score, id) end
  redis.call('ZREM', started, execution)
  redis.call('DEL', execution_prefix .. execution)
  i = i + 11 + 2 * n
end
return 1
