-- A batch's outcomes recorded as RQ records them, in one call (a script, so no MULTI/EXEC whose
-- time Redis would count again). Per job: its hash (status, end, the JSON polls answer; its
-- progress and stop request emptied in the same HSET: readers take '' for none), its TTL, its
-- entry in RQ's result stream; its event only if its stream is open. Per batch, one command each:
-- whether any of the jobs' event streams is open (EXISTS), the registries (each
-- ZADD with every job of it), the StartedJobRegistry's executions removed, their hashes deleted
-- and gone from the worker's execution index; the worker's counters (and its state, idle, once
-- the batch is done), the duration histogram, and fair order's accounts (settle_accounts.lua).
--- KEYS: executions worker started snapshot durations waiting used running holders
--- ARGV: ended_at idle clients_prefix successful failed working_time #histogram[field value]
---   #accounts[client running use] jobs[id status state outcome ttl events_ttl registry also execution score #entry]
-- executions: the worker's execution index; worker: its hash; started: the type's
-- StartedJobRegistry; snapshot: reconcile.lua's copy of its job ids (the jobs recorded here
-- leave it: their events are written here, there is nothing to reconcile); durations: its histogram; waiting, used, running, holders: its fair order's
-- (settle_accounts.lua). ended_at: the end stamp; idle: '1' when the batch is done; clients_prefix:
-- of the type's clients' lists; successful, failed, working_time: the worker's counters' steps.
-- Per histogram field, its step; per account, a client, its running count's change and its use's.
-- Per job: RQ's status, our state ('' where RQ's says it all), the outcome JSON, its TTL and its
-- event stream's, its registry, a second registry ('' for none), its execution, the registries'
-- score, and its result entry's fields and values.
local CHUNK = 1000 -- values per variadic command (Lua's unpack has a limit)
local function each_chunk(values, command, key)
  for first = 1, #values, CHUNK do
    redis.call(command, key, unpack(values, first, math.min(first + CHUNK - 1, #values)))
  end
end
local registries, order, members, hashes, ids = {}, {}, {}, {}, {}
local function enter(registry, score, id)
  if not registries[registry] then registries[registry], order[#order + 1] = {}, registry end
  local scored = registries[registry]
  scored[#scored + 1], scored[#scored + 2] = score, id
end
for _, job in ipairs(jobs) do
  local key = PREFIX.job .. job.id
  if job.state ~= '' then
    redis.call('HSET', key, JOB.status, job.status, JOB.ended_at, A.ended_at, JOB.outcome, job.outcome, JOB.progress,
      '', JOB.stop, '', JOB.state, job.state)
  else
    redis.call('HSET', key, JOB.status, job.status, JOB.ended_at, A.ended_at, JOB.outcome, job.outcome, JOB.progress,
      '', JOB.stop, '')
  end
  redis.call('EXPIRE', key, job.ttl)
  local results = PREFIX.results .. job.id
  redis.call('XADD', results, 'MAXLEN', '~', RESULTS_MAXLEN, '*', unpack(job.entry))
  redis.call('EXPIRE', results, job.ttl)
  enter(job.registry, job.score, job.id)
  if job.also ~= '' then enter(job.also, job.score, job.id) end
  members[#members + 1], hashes[#hashes + 1] = job.execution, PREFIX.execution .. job.execution
  ids[#ids + 1] = job.id
end
-- Their events, only to streams someone opened: one EXISTS per chunk finds none open (the usual
-- case), so a job nobody watches costs no command of its own here.
for first = 1, #jobs, CHUNK do
  local streams = {}
  for i = first, math.min(first + CHUNK - 1, #jobs) do streams[#streams + 1] = PREFIX.events .. jobs[i].id end
  if redis.call('EXISTS', unpack(streams)) > 0 then
    for i, stream in ipairs(streams) do
      local job = jobs[first + i - 1]
      append_event(redis.call, stream, job.events_ttl, job.state ~= '' and job.state or job.status, job.outcome, '')
    end
  end
end
for _, registry in ipairs(order) do each_chunk(registries[registry], 'ZADD', registry) end
if #members > 0 then
  each_chunk(members, 'ZREM', K.started)
  for first = 1, #hashes, CHUNK do redis.call('DEL', unpack(hashes, first, math.min(first + CHUNK - 1, #hashes))) end
  each_chunk(members, 'SREM', K.executions)
  each_chunk(ids, 'SREM', K.snapshot)
end
if #accounts > 0 then
  settle_accounts(K.waiting, K.used, K.running, K.holders, K.worker, A.clients_prefix, accounts, {})
end
for _, step in ipairs(histogram) do redis.call('HINCRBYFLOAT', K.durations, step.field, step.value) end
if A.idle == '1' then redis.call('HSET', K.worker, WORKER.state, WORKER_STATE.idle) end
if #jobs > 0 then
  redis.call('HINCRBY', K.worker, WORKER.successful_job_count, A.successful)
  redis.call('HINCRBY', K.worker, WORKER.failed_job_count, A.failed)
  redis.call('HINCRBYFLOAT', K.worker, WORKER.total_working_time, A.working_time)
end
return 1
