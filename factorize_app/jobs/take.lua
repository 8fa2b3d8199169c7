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
local taken
local executions = {} -- this take's members of the worker's execution index

local function start(queue, id, job, client)
  local key = PREFIX.job .. id
  local execution = id .. ':' .. execution_id
  local execution_key = PREFIX.execution .. execution
  redis.call('HSET', key, JOB.status, STATUS.started, JOB.started_at, stamp, JOB.last_heartbeat, stamp, JOB.worker_name,
    worker)
  if client ~= '' and job[8] ~= client then redis.call('HSET', key, JOB.client, client) end -- its turn
  redis.call('PERSIST', key)
  redis.call('HSET', execution_key, EXECUTION.id, execution_id, EXECUTION.job_id, id, EXECUTION.created_at, now,
    EXECUTION.last_heartbeat, now, EXECUTION.worker_name, worker)
  redis.call('EXPIRE', execution_key, lease)
  executions[#executions + 1] = execution
  redis.call('ZADD', queue.started, now + lease, execution)
  redis.call('ZREM', queue.pending, id)
  redis.call('HDEL', queue.inputs, id)
  if client ~= '' then redis.call('HINCRBY', queue.running, client, 1) end
  append_event(redis.call, PREFIX.events .. id, queue.events_ttl, STATUS.started, '', '')
  taken[#taken + 1] = {id, job[2] or '', job[3] or '', job[4] or '', job[5] or '', job[6] or '', job[7] or '', client}
end

local function fields(id)
  return redis.call('HMGET', PREFIX.job .. id, JOB.status, JOB.description, JOB.timeout, JOB.result_ttl,
    JOB.failure_ttl, JOB.stop, JOB.deadline, JOB.client)
end

-- The waiting client with the least use that is under its cap on running jobs, and that use.
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
      if cap <= 0 or (tonumber(redis.call('HGET', queue.running, client)) or 0) < cap then
        return client, tonumber(clients[i + 1])
      end
    end
  end
  return nil
end

-- Drop RQ's heads that are no longer queued (taken from a client's list, expired, cancelled);
-- answers the queued head, if any.
local function drop_stale_heads(queue)
  while true do
    local head = redis.call('LINDEX', queue.list, 0)
    if not head or redis.call('HGET', PREFIX.job .. head, JOB.status) == STATUS.queued then return head end
    redis.call('LPOP', queue.list)
  end
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

-- Whether a queued job taken from `client`'s list is still the client's: it owns it (a job of
-- ours without owners, from before owners were kept, is its first client's).
local function owned(id, job, client)
  if redis.call('SISMEMBER', PREFIX.owners .. id, client) == 1 then return true end
  return job[8] == client and redis.call('EXISTS', PREFIX.owners .. id) == 0
end

local served_use -- the use of the client served last, written to the use hash once per take

local function serve_client(queue)
  local client, score = next_client(queue)
  if not client then return false end
  local list = queue.clients .. client
  local id = redis.call('LPOP', list)
  local job = id and fields(id)
  local used = score
  if job and job[1] == STATUS.queued and owned(id, job, client) then
    used = tonumber(redis.call('HINCRBYFLOAT', queue.used, client, queue.estimate))
    served_use = score
    start(queue, id, job, client)
  end
  if redis.call('LLEN', list) == 0 then
    redis.call('ZREM', queue.waiting, client)
  else
    redis.call('ZADD', queue.waiting, used, client)
  end
  return true
end

for _, queue in ipairs(queues) do
  queue.estimate, queue.cap = tonumber(queue.estimate), tonumber(queue.cap)
  taken = {queue.name}
  local waiting = redis.call('ZCARD', queue.pending)
  if waiting == 0 and redis.call('LLEN', queue.list) > 0 then waiting = 1 end -- RQ's own re-queues
  local want = math.min(count, math.ceil(waiting / math.max(redis.call('SCARD', queue.workers), 1)))
  if fair then
    while #taken <= want and serve_head(queue) do end -- RQ's own re-queues first
    local tries = 0
    served_use, caps_seen = nil, {}
    while #taken <= want and tries < want + SCAN do
      tries = tries + 1
      if not serve_client(queue) then break end
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
  if #taken > 1 then
    redis.call('HSET', K.worker, WORKER.state, WORKER_STATE.busy)
    redis.call('SADD', K.executions, unpack(executions))
    local worker_ttl = redis.call('TTL', K.worker) -- RQ's heartbeat keeps the index as long as the worker
    redis.call('EXPIRE', K.executions, worker_ttl > 0 and worker_ttl or lease + 60)
    return taken
  end
end
return false
