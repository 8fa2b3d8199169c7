-- A worker running one job for long asks whether its client should give the worker back: when
-- another client's job waits, every worker of the type is busy, and the job's client holds more
-- long-running workers than its fair share (ceil(workers / clients with work)), the youngest of
-- its jobs is handed back (answer 1: this worker's, if it is the youngest). The asking worker
-- registers as a holder; holders no longer registered as workers are forgotten.
-- KEYS: the long jobs' holders (worker key -> "<client> <start>"), the type's waiting clients,
-- the type's workers (worker keys).
-- ARGV: the worker's key, the job's client, the job's start (Unix seconds).
local holders, waiting, workers = KEYS[1], KEYS[2], KEYS[3]
local me, client, started = ARGV[1], ARGV[2], ARGV[3]
redis.call('HSET', holders, me, client .. ' ' .. started)
local others = redis.call('ZCARD', waiting)
if redis.call('ZSCORE', waiting, client) then others = others - 1 end
if others <= 0 then return 0 end
local names = redis.call('SMEMBERS', workers)
for _, worker in ipairs(names) do
  if redis.call('HGET', worker, 'state') ~= 'busy' then return 0 end -- an idle worker takes the waiting job
end
local held, youngest, youngest_start, extra = {}, {}, {}, 0
local entries = redis.call('HGETALL', holders)
for i = 1, #entries, 2 do
  local worker, value = entries[i], entries[i + 1]
  if redis.call('SISMEMBER', workers, worker) == 0 then
    redis.call('HDEL', holders, worker)
  else
    local owner, start = string.match(value, '^(.*) ([^ ]+)$')
    start = tonumber(start) or 0
    if not held[owner] then
      held[owner] = 0
      if not redis.call('ZSCORE', waiting, owner) then extra = extra + 1 end
    end
    held[owner] = held[owner] + 1
    if not youngest_start[owner] or start > youngest_start[owner] then
      youngest[owner], youngest_start[owner] = worker, start
    end
  end
end
local share = math.ceil(#names / math.max(redis.call('ZCARD', waiting) + extra, 1))
if (held[client] or 0) > share and youngest[client] == me then
  redis.call('HDEL', holders, me)
  return 1
end
return 0
