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
-- KEYS: the worker's hash, the clock, the outages, RQ's suspension flag, the worker's execution
-- index; then per queue, in
-- order: its RQ list, its workers set, its StartedJobRegistry, its pending set, its stored
-- inputs, its waiting clients, their use, their running jobs, their caps.
-- ARGV: count, lease, the worker's name, the start stamp, the execution id, fair ('1' or '0'), the
-- outage gap, the job hash prefix, the execution hash prefix, the event stream prefix, the event
-- stream's length, the owners' key prefix; then per queue: its name, the prefix of its clients' lists, the estimated
-- seconds of one job, the default cap on a client's running jobs (0: none), a running job's
-- event stream TTL. Each job started gets its `started` event.
-- Answers {queue name, {id, description, timeout, result_ttl, failure_ttl, stop, deadline, client}...}
-- or false (stop and deadline: a stop request made before the job was taken, its Cancel-After).
if redis.call('EXISTS', KEYS[4]) == 1 then return false end
local now = clock_tick(KEYS[2], KEYS[3], ARGV[7])
local count, lease, worker, stamp, execution_id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local fair = ARGV[6] == '1'
local job_prefix, execution_prefix, events_prefix, events_maxlen = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local owners_prefix = ARGV[12]
local CLOCK = ':clock' -- the use of the client served last, in the use hash (no client is named so)
local SCAN = 256 -- clients at their cap looked past at most, per take
local taken
local executions = {} -- this take's members of the worker's execution index

local function start(queue, id, job, client)
  local key = job_prefix .. id
  local execution = id .. ':' .. execution_id
  local execution_key = execution_prefix .. execution
  redis.call('HSET', key, 'status', 'started', 'started_at', stamp, 'last_heartbeat', stamp, 'worker_name', worker)
  if client ~= '' and job[8] ~= client then redis.call('HSET', key, 'factorize_client', client) end -- its turn
  redis.call('PERSIST', key)
  redis.call('HSET', execution_key, 'id', execution_id, 'job_id', id, 'created_at', now, 'last_heartbeat', now,
    'worker_name', worker)
  redis.call('EXPIRE', execution_key, lease)
  executions[#executions + 1] = execution
  redis.call('ZADD', queue.started, now + lease, execution)
  redis.call('ZREM', queue.pending, id)
  redis.call('HDEL', queue.inputs, id)
  if client ~= '' then redis.call('HINCRBY', queue.running, client, 1) end
  append_event(redis.call, events_prefix .. id, events_maxlen, queue.events_ttl, 'started', '', '')
  taken[#taken + 1] = {id, job[2] or '', job[3] or '', job[4] or '', job[5] or '', job[6] or '', job[7] or '', client}
end

local function fields(id)
  return redis.call('HMGET', job_prefix .. id, 'status', 'description', 'timeout', 'result_ttl', 'failure_ttl',
    'factorize_stop', 'factorize_deadline', 'factorize_client')
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
    if not head or redis.call('HGET', job_prefix .. head, 'status') == 'queued' then return head end
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
  if redis.call('SISMEMBER', owners_prefix .. id, client) == 1 then return true end
  return job[8] == client and redis.call('EXISTS', owners_prefix .. id) == 0
end

local served_use -- the use of the client served last, written to the use hash once per take

local function serve_client(queue)
  local client, score = next_client(queue)
  if not client then return false end
  local list = queue.clients .. client
  local id = redis.call('LPOP', list)
  local job = id and fields(id)
  local used = score
  if job and job[1] == 'queued' and owned(id, job, client) then
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

for n = 0, (#KEYS - 5) / 9 - 1 do
  local k, a = 5 + 9 * n, 12 + 5 * n
  local queue = {
    list = KEYS[k + 1], workers = KEYS[k + 2], started = KEYS[k + 3], pending = KEYS[k + 4],
    inputs = KEYS[k + 5], waiting = KEYS[k + 6], used = KEYS[k + 7], running = KEYS[k + 8], caps = KEYS[k + 9],
    name = ARGV[a + 1], clients = ARGV[a + 2], estimate = tonumber(ARGV[a + 3]), cap = tonumber(ARGV[a + 4]),
    events_ttl = ARGV[a + 5],
  }
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
    if served_use then redis.call('HSET', queue.used, CLOCK, served_use) end
    drop_stale_heads(queue) -- those just taken, if they were at the head
  else
    while #taken == 1 and redis.call('LLEN', queue.list) > 0 do
      for _, id in ipairs(redis.call('LPOP', queue.list, want)) do
        local job = fields(id)
        if job[1] == 'queued' then start(queue, id, job, '') end
      end
    end
  end
  if #taken > 1 then
    redis.call('HSET', KEYS[1], 'state', 'busy')
    redis.call('SADD', KEYS[5], unpack(executions))
    local worker_ttl = redis.call('TTL', KEYS[1]) -- RQ's heartbeat keeps the index as long as the worker
    redis.call('EXPIRE', KEYS[5], worker_ttl > 0 and worker_ttl or lease + 60)
    return taken
  end
end
return false
