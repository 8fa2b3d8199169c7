-- A worker running one job for long asks whether its client should give the worker back. Only
-- while another client's job waits and every worker of the type is busy; then, of the jobs that
-- may be handed back now (a job handed back k times may be again once it has run grace * 2^k
-- seconds: each hand-back doubles its next grace, so every job finishes in the end), the
-- youngest job is handed back (answer 1: this worker's, if it is that job):
-- - of a client holding more long-running workers than its fair share
--   (ceil(workers / clients with work));
-- - else, when every worker of the type runs a long job and a waiting client has nothing
--   running (a newcomer), of the client with the most long-running workers, and of those the
--   one that has used the most worker time (settled use plus its long jobs' time so far).
-- The asking worker registers as a holder; holders no longer registered as workers are
-- forgotten. A job handed back counts it in its hash (JOB.handed_back).
--- KEYS: holders waiting workers used running job
--- ARGV: worker client started ran grace
-- holders: the long jobs' holders (worker key -> "<may be handed back: 1/0> <start> <client>");
-- waiting, workers, used, running: the type's waiting clients, its workers (worker keys), the
-- clients' use and running jobs; job: the job's hash. worker: the asking worker's key; client:
-- the job's; started: the job's start (Unix seconds); ran: the seconds it has run; grace: seconds.
local holders, waiting, workers, used, running, job = K.holders, K.waiting, K.workers, K.used, K.running, K.job
local me, client, started = A.worker, A.client, A.started
local handed_back = tonumber(redis.call('HGET', job, JOB.handed_back)) or 0
local may = tonumber(A.ran) >= tonumber(A.grace) * 2 ^ handed_back and '1' or '0'
redis.call('HSET', holders, me, may .. ' ' .. started .. ' ' .. client)
local others = redis.call('ZCARD', waiting)
if redis.call('ZSCORE', waiting, client) then others = others - 1 end
if others <= 0 or may == '0' then return 0 end
local names = redis.call('SMEMBERS', workers)
for _, worker in ipairs(names) do
  if redis.call('HGET', worker, WORKER.state) ~= WORKER_STATE.busy then return 0 end -- an idle worker takes the waiting job
end
local t = redis.call('TIME')
local now = tonumber(t[1])
local held, long_time, youngest, youngest_start, extra, long_workers = {}, {}, {}, {}, 0, 0
local entries = redis.call('HGETALL', holders)
for i = 1, #entries, 2 do
  local worker, value = entries[i], entries[i + 1]
  if redis.call('SISMEMBER', workers, worker) == 0 then
    redis.call('HDEL', holders, worker)
  else
    local eligible, start, owner = string.match(value, '^([01]) ([^ ]+) (.*)$')
    start = tonumber(start) or 0
    long_workers = long_workers + 1
    if not held[owner] then
      held[owner], long_time[owner] = 0, 0
      if not redis.call('ZSCORE', waiting, owner) then extra = extra + 1 end
    end
    held[owner] = held[owner] + 1
    long_time[owner] = long_time[owner] + math.max(0, now - start)
    if eligible == '1' and (not youngest_start[owner] or start > youngest_start[owner]) then
      youngest[owner], youngest_start[owner] = worker, start
    end
  end
end
local function hand_back()
  redis.call('HDEL', holders, me)
  redis.call('HINCRBY', job, JOB.handed_back, 1)
  return 1
end
local share = math.ceil(#names / math.max(redis.call('ZCARD', waiting) + extra, 1))
if (held[client] or 0) > share then
  return youngest[client] == me and hand_back() or 0
end
if long_workers < #names then return 0 end -- a short job ends soon, and fair order serves the newcomer
local newcomer = false
for _, other in ipairs(redis.call('ZRANGE', waiting, 0, 15)) do
  if not held[other] and (tonumber(redis.call('HGET', running, other)) or 0) == 0 then
    newcomer = true
    break
  end
end
if not newcomer then return 0 end
local heaviest, most, most_time = nil, 0, 0
for owner, count in pairs(held) do
  if youngest[owner] then
    local time_used = (tonumber(redis.call('HGET', used, owner)) or 0) + long_time[owner]
    if count > most or (count == most and time_used > most_time) then
      heaviest, most, most_time = owner, count, time_used
    end
  end
end
return heaviest == client and youngest[client] == me and hand_back() or 0
