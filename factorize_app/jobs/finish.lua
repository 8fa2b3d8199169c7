-- A batch's outcomes recorded as RQ records them (in finish_jobs' transaction), in one call: per
-- job, its hash (status, end, the JSON polls answer; no progress or stop request left), its TTL,
-- its event, its entry in RQ's result stream, its registry, and its execution ended (and gone
-- from the worker's execution index, KEYS[1]).
-- ARGV: the end stamp, the job hash prefix, the result stream prefix, the event stream prefix, the
-- execution hash prefix, the progress field, the stop field, the event stream's length, our state
-- field; then per job: id, RQ's status, our state ('' where RQ's says it all), outcome JSON, TTL,
-- the event stream's TTL, its registry, a second registry ('' for none), its
-- StartedJobRegistry, its execution, the registries' score, the number N of result entry
-- fields, then N field and value pairs.
local ended_at, job_prefix, results_prefix, events_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local execution_prefix, progress_field, stop_field, events_maxlen = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local state_field = ARGV[9]
local i = 10
while i <= #ARGV do
  local id, status, state, outcome = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local ttl, events_ttl, registry, also = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local started, execution, score = ARGV[i + 8], ARGV[i + 9], ARGV[i + 10]
  local n = tonumber(ARGV[i + 11])
  local key = job_prefix .. id
  redis.call('HSET', key, 'status', status, 'ended_at', ended_at, 'factorize_outcome', outcome)
  if state ~= '' then redis.call('HSET', key, state_field, state) end
  redis.call('HDEL', key, progress_field, stop_field)
  redis.call('EXPIRE', key, ttl)
  append_event(redis.call, events_prefix .. id, events_maxlen, events_ttl, state ~= '' and state or status, outcome, '')
  local entry = {}
  for f = i + 12, i + 11 + 2 * n do entry[#entry + 1] = ARGV[f] end
  local results = results_prefix .. id
  redis.call('XADD', results, 'MAXLEN', '~', 10, '*', unpack(entry))
  redis.call('EXPIRE', results, ttl)
  redis.call('ZADD', registry, score, id)
  if also ~= '' then redis.call('ZADD', also, score, id) end
  redis.call('ZREM', started, execution)
  redis.call('DEL', execution_prefix .. execution)
  redis.call('SREM', KEYS[1], execution)
  i = i + 12 + 2 * n
end
return 1
