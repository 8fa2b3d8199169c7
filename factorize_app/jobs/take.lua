-- A worker takes a batch from the first listed queue that has jobs: up to `count` of them, fewer
-- to share a burst between the queue's registered workers. In FIFO order it pops RQ's list. In
-- fair order it serves the type's waiting clients by least worker time used (each job taken
-- charges its client the worker's estimate of a job's cost; the worker settles the difference
-- when the job ends), skipping a client at its cap on running jobs; and first any queued job at
-- the head of RQ's list that waits in no client's list (RQ's own re-queues). A job taken from a
-- client's list stays in RQ's list until it reaches the head, where it is dropped as no longer
-- queued: each id enters and leaves RQ's list once, so a take costs the same however long the
-- queue (no LREM scan). Ids whose job is no longer queued (expired, cancelled, listed twice: a
-- shared job is lined up in each of its owners' lists, and runs at the earliest of their turns) or
-- no longer the client's (an owner that withdrew) are skipped. The rest start as RQ's worker starts them, each with an execution leased for `lease`
-- seconds in the StartedJobRegistry.
-- Nothing is taken while RQ's workers are suspended (`rq suspend`): the worker checks that before
-- it takes, and the check here closes the gap between that check and the take.
-- Each execution also joins the worker's execution index, as RQ's own worker adds it, so RQ's
-- tools name the jobs a worker is running (`current_job`, the dashboard's worker page).
-- Redis's cost: per job, its fields read, its hash and its execution written (and, for a job of
-- several owners, its ownership checked in fair order); what the jobs add to the queue's keys (registry, pending set, inputs,
-- running counts) is written once per take, whether any of their event streams is open is one
-- EXISTS per take, and a client is served its turns in a row at once
-- (as many as it gets before its use passes the next client's), one LPOP for them.
--- KEYS: worker clock outages suspended executions
---   queues[list workers started pending inputs waiting used running caps]
--- ARGV: count lease worker_name stamp execution_id fair queues[name clients estimate cap events_ttl]
-- worker, executions: the worker's hash and its execution index; suspended: RQ's suspension flag.
-- Per queue, in order: its RQ list, its workers set, its StartedJobRegistry, its pending set, its
-- stored inputs, its waiting clients, their use, their running jobs, their caps; its name, the
-- prefix of its clients' lists, the estimated seconds of one job, the default cap on a client's
-- running jobs (0: none), a running job's event stream TTL. stamp: the start stamp; fair: '1' or
-- '0'. Each job started gets its `started` event.
-- Answers {queue name, {id, description, timeout, result_ttl, failure_ttl, stop, deadline, client}...}
-- or false (stop and deadline: a stop request made before the job was taken, its Cancel-After).
if redis.call('EXISTS', K.suspended) == 1 then return false end
local now = clock_tick(K.clock, K.outages)
local count, lease, worker, stamp, execution_id = tonumber(A.count), tonumber(A.lease), A.worker_name, A.stamp, A.execution_id
local fair = A.fair == '1'
local SCAN = 256 -- clients at their cap looked past at most, per take
local CHUNK = 1000 -- values per variadic command (Lua's unpack has a limit)
local taken
local executions = {} -- this take's members of the worker's execution index
-- What the jobs started add to their queue's keys, written once per queue by `flush`.
local scored, started_ids, running_by, started_set

local function each_chunk(values, command, key)
  for first = 1, #values, CHUNK do
    redis.call(command, key, unpack(values, first, math.min(first + CHUNK - 1, #values)))
  end
end

local function start(queue, id, job, client)
  local key = PREFIX.job .. id
  local execution = id .. ':' .. execution_id
  local execution_key = PREFIX.execution .. execution
  if client ~= '' and job[8] ~= client then -- its turn
    redis.call('HSET', key, JOB.status, STATUS.started, JOB.started_at, stamp, JOB.last_heartbeat, stamp,
      JOB.worker_name, worker, JOB.client, client)
  else
    redis.call('HSET', key, JOB.status, STATUS.started, JOB.started_at, stamp, JOB.last_heartbeat, stamp,
      JOB.worker_name, worker)
  end
  redis.call('PERSIST', key)
  redis.call('HSET', execution_key, EXECUTION.id, execution_id, EXECUTION.job_id, id, EXECUTION.created_at, now,
    EXECUTION.last_heartbeat, now, EXECUTION.worker_name, worker)
  redis.call('EXPIRE', execution_key, lease)
  executions[#executions + 1] = execution
  scored[#scored + 1], scored[#scored + 2] = now + lease, execution
  started_ids[#started_ids + 1], started_set[id] = id, true
  if client ~= '' then running_by[client] = (running_by[client] or 0) + 1 end
  taken[#taken + 1] = {id, job[2] or '', job[3] or '', job[4] or '', job[5] or '', job[6] or '', job[7] or '', client}
end

local function flush(queue)
  if #started_ids == 0 then return end
  each_chunk(scored, 'ZADD', queue.started)
  each_chunk(started_ids, 'ZREM', queue.pending)
  each_chunk(started_ids, 'HDEL', queue.inputs)
  for client, n in pairs(running_by) do redis.call('HINCRBY', queue.running, client, n) end
  -- Their `started` events, only to streams someone opened: one EXISTS per chunk finds none open
  -- (the usual case), so a job nobody watches costs no command of its own here.
  for first = 1, #started_ids, CHUNK do
    local streams = {}
    for i = first, math.min(first + CHUNK - 1, #started_ids) do streams[#streams + 1] = PREFIX.events .. started_ids[i] end
    if redis.call('EXISTS', unpack(streams)) > 0 then
      for _, stream in ipairs(streams) do append_event(redis.call, stream, queue.events_ttl, STATUS.started, '', '') end
    end
  end
end

local function fields(id)
  return redis.call('HMGET', PREFIX.job .. id, JOB.status, JOB.description, JOB.timeout, JOB.result_ttl,
    JOB.failure_ttl, JOB.stop, JOB.deadline, JOB.client, JOB.owner)
end

-- A client's running jobs: as counted in Redis, and those this take started.
local function running_of(queue, client)
  return (tonumber(redis.call('HGET', queue.running, client)) or 0) + (running_by[client] or 0)
end

-- The waiting client with the least use that is under its cap on running jobs: it, its use, its
-- cap and its running jobs, and the client after it in order with that one's use (nil: none).
-- Caps are read once per take (`caps_seen`): they do not change while the script runs.
local caps_seen = {}
local function next_client(queue)
  for offset = 0, SCAN - 1, 16 do
    local clients = redis.call('ZRANGE', queue.waiting, offset, offset + 15, 'WITHSCORES')
    if #clients == 0 then return nil end
    for i = 1, #clients, 2 do
      local client = clients[i]
      local cap = caps_seen[client]
      if cap == nil then
        cap = tonumber(redis.call('HGET', queue.caps, client)) or queue.cap
        caps_seen[client] = cap
      end
      local running = cap > 0 and running_of(queue, client) or 0
      if cap <= 0 or running < cap then
        local rival, rival_use = clients[i + 2], clients[i + 3]
        if not rival then
          local after = redis.call('ZRANGE', queue.waiting, offset + (i + 1) / 2, offset + (i + 1) / 2, 'WITHSCORES')
          rival, rival_use = after[1], after[2]
        end
        return client, tonumber(clients[i + 1]), cap, running, rival, tonumber(rival_use)
      end
    end
  end
  return nil
end

-- Drop RQ's heads that are no longer queued (taken from a client's list, expired, cancelled; those
-- this take started need no look), in one LPOP; answers the queued head, if any.
local function drop_stale_heads(queue)
  local dropped, head = 0, nil
  while not head do
    local heads = redis.call('LRANGE', queue.list, dropped, dropped + 63)
    if #heads == 0 then break end
    for _, id in ipairs(heads) do
      if not started_set[id] and redis.call('HGET', PREFIX.job .. id, JOB.status) == STATUS.queued then
        head = id
        break
      end
      dropped = dropped + 1
    end
  end
  if dropped > 0 then redis.call('LPOP', queue.list, dropped) end
  return head
end

-- Serve RQ's head if it is a queued job no client's list holds (RQ's own re-queues).
local function serve_head(queue)
  local head = drop_stale_heads(queue)
  if not head then return false end
  local job = fields(head)
  if job[8] and redis.call('ZSCORE', queue.waiting, job[8]) and redis.call('LPOS', queue.clients .. job[8], head) then
    return false -- a client's job: its turn comes through its client's list (bounded by its cap)
  end
  redis.call('LPOP', queue.list)
  start(queue, head, job, '')
  return true
end

-- Whether a queued job taken from `client`'s list is still the client's: it owns it (its one
-- owner is named in its hash, several in its owners' set; a job of ours without owners, from
-- before owners were kept, is its first client's).
local function owned(id, job, client)
  if job[9] then return job[9] == client end
  if redis.call('SISMEMBER', PREFIX.owners .. id, client) == 1 then return true end
  return job[8] == client and redis.call('EXISTS', PREFIX.owners .. id) == 0
end

local served_use -- the use of the client served last, written to the use hash once per take

-- Serve the next client its turns in a row, up to `most`: each job charges it the estimate, and
-- it keeps the turn while its use stays below the next client's (at a tie, the name first in the
-- order's); and within its cap. Answers how many ids it popped (0: no client to serve).
local function serve_client(queue, most)
  local client, score, cap, running, rival, rival_use = next_client(queue)
  if not client then return 0 end
  local limit = cap > 0 and math.min(most, cap - running) or most
  local turns, use = 1, score + queue.estimate
  while turns < limit and (not rival or use < rival_use or (use == rival_use and client < rival)) do
    turns, use = turns + 1, use + queue.estimate
  end
  local list = queue.clients .. client
  local popped = redis.call('LPOP', list, turns) or {}
  local served = 0
  for _, id in ipairs(popped) do
    local job = fields(id)
    if job[1] == STATUS.queued and owned(id, job, client) then
      served_use = score + queue.estimate * served
      served = served + 1
      start(queue, id, job, client)
    end
  end
  local used = score
  if served > 0 then used = tonumber(redis.call('HINCRBYFLOAT', queue.used, client, queue.estimate * served)) end
  if redis.call('LLEN', list) == 0 then
    redis.call('ZREM', queue.waiting, client)
  else
    redis.call('ZADD', queue.waiting, used, client)
  end
  return math.max(#popped, 1)
end

for _, queue in ipairs(queues) do
  queue.estimate, queue.cap = tonumber(queue.estimate), tonumber(queue.cap)
  taken = {queue.name}
  scored, started_ids, running_by, started_set = {}, {}, {}, {}
  local waiting = redis.call('ZCARD', queue.pending)
  if waiting == 0 and redis.call('LLEN', queue.list) > 0 then waiting = 1 end -- RQ's own re-queues
  local want = math.min(count, math.ceil(waiting / math.max(redis.call('SCARD', queue.workers), 1)))
  if fair then
    while #taken <= want and serve_head(queue) do end -- RQ's own re-queues first
    local tries = 0
    served_use, caps_seen = nil, {}
    while #taken <= want and tries < want + SCAN do
      local popped = serve_client(queue, want - #taken + 1)
      if popped == 0 then break end
      tries = tries + popped
    end
    if served_use then redis.call('HSET', queue.used, FAIR_CLOCK, served_use) end
    drop_stale_heads(queue) -- those just taken, if they were at the head
  else
    while #taken == 1 and redis.call('LLEN', queue.list) > 0 do
      for _, id in ipairs(redis.call('LPOP', queue.list, want)) do
        local job = fields(id)
        if job[1] == STATUS.queued then start(queue, id, job, '') end
      end
    end
  end
  flush(queue)
  if #taken > 1 then
    redis.call('HSET', K.worker, WORKER.state, WORKER_STATE.busy)
    redis.call('SADD', K.executions, unpack(executions))
    local worker_ttl = redis.call('TTL', K.worker) -- RQ's heartbeat keeps the index as long as the worker
    redis.call('EXPIRE', K.executions, worker_ttl > 0 and worker_ttl or lease + 60)
    return taken
  end
end
return false
