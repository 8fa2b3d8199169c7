-- A worker takes a batch from the first listed queue that has jobs: up to `count` of them, fewer
-- to share a burst between the queue's registered workers. In FIFO order it pops RQ's list; in
-- fair order it serves the type's clients in turn, one job each, from their own lists (removing
-- the id from RQ's list too), and first any queued job at the head of RQ's list that waits in no
-- client's list (RQ's own re-queues). Ids whose job is no longer queued (expired, cancelled,
-- listed twice) are skipped. The rest start as RQ's worker starts them, each with an execution
-- leased for `lease` seconds in the StartedJobRegistry.
-- KEYS: the worker's hash, the clock, the outages; then per queue, in order: its RQ list, its
-- workers set, its StartedJobRegistry, its pending set, its stored inputs, its fair ring.
-- ARGV: count, lease, the worker's name, the start stamp, the execution id, fair ('1' or '0'), the
-- outage gap, the job hash prefix, the execution hash prefix; then per queue: its name and the
-- prefix of its clients' lists.
-- Answers {queue name, {id, description, timeout, result_ttl, failure_ttl, stop, deadline}...} or
-- false (stop and deadline: a stop request made before the job was taken, its Cancel-After).
local now = clock_tick(KEYS[2], KEYS[3], ARGV[7])
local count, lease, worker, stamp, execution_id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local fair = ARGV[6] == '1'
local job_prefix, execution_prefix = ARGV[8], ARGV[9]
local taken

local function start(queue, id)
  local key = job_prefix .. id
  local job = redis.call('HMGET', key, 'status', 'description', 'timeout', 'result_ttl', 'failure_ttl',
    'factorize_stop', 'factorize_deadline')
  if job[1] ~= 'queued' then return end
  local execution = id .. ':' .. execution_id
  local execution_key = execution_prefix .. execution
  redis.call('HSET', key, 'status', 'started', 'started_at', stamp, 'last_heartbeat', stamp, 'worker_name', worker)
  redis.call('HDEL', key, 'factorize_fair')
  redis.call('PERSIST', key)
  redis.call('HSET', execution_key, 'job_id', id, 'created_at', now, 'last_heartbeat', now, 'worker_name', worker)
  redis.call('EXPIRE', execution_key, lease)
  redis.call('ZADD', queue.started, now + lease, execution)
  redis.call('ZREM', queue.pending, id)
  redis.call('HDEL', queue.inputs, id)
  taken[#taken + 1] = {id, job[2] or '', job[3] or '', job[4] or '', job[5] or '', job[6] or '', job[7] or ''}
end

for n = 0, (#KEYS - 3) / 6 - 1 do
  local k, a = 3 + 6 * n, 9 + 2 * n
  local queue = {
    list = KEYS[k + 1], workers = KEYS[k + 2], started = KEYS[k + 3], pending = KEYS[k + 4],
    inputs = KEYS[k + 5], ring = KEYS[k + 6], name = ARGV[a + 1], clients = ARGV[a + 2],
  }
  taken = {queue.name}
  local waiting = redis.call('LLEN', queue.list)
  local want = math.min(count, math.ceil(waiting / math.max(redis.call('SCARD', queue.workers), 1)))
  if fair then
    while #taken <= want do
      local head = redis.call('LINDEX', queue.list, 0)
      if not head then break end
      local fields = redis.call('HMGET', job_prefix .. head, 'status', 'factorize_fair')
      local client = nil
      if fields[1] == 'queued' and fields[2] == '1' then client = redis.call('LPOP', queue.ring) end
      if client then
        local client_list = queue.clients .. client
        local id = redis.call('LPOP', client_list)
        if redis.call('LLEN', client_list) > 0 then redis.call('RPUSH', queue.ring, client) end
        if id then
          redis.call('LREM', queue.list, 1, id)
          start(queue, id)
        end
      else
        redis.call('LPOP', queue.list)
        start(queue, head)
      end
    end
  else
    while #taken == 1 and redis.call('LLEN', queue.list) > 0 do
      for _, id in ipairs(redis.call('LPOP', queue.list, want)) do start(queue, id) end
    end
  end
  if #taken > 1 then
    redis.call('HSET', KEYS[1], 'state', 'busy')
    return taken
  end
end
return false
