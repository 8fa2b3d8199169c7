-- One round trip per poll of one job or a batch of them.
-- KEYS: the type's pending set, its StartedJobRegistry, the client's rate-limit counter ('' for
-- none), the clock, the outages, its aborted registry, its canceled registry.
-- ARGV: JOB_TTL, the rate limit, its window, the outage gap, the job hash prefix, FAILURE_TTL, an
-- aborted job's outcome JSON, the event streams' prefix, their MAXLEN and retention, the owners'
-- key prefix, the client claiming the jobs ('' for none: a submit makes its client an owner), the
-- client who must own them ('' for none: with API keys, a job read by id), the owners' TTL, what
-- the request costs against the rate limit (a batch: one per item), our state field, RQ's word
-- for an aborted job (canceled) and ours (aborted), the claiming client's Cancel-After seconds
-- ('' for none), the owners' deadlines key prefix, the prefix of the type's clients' lists ('' in
-- FIFO order), then the job ids. A job's answered status is our state where we keep one, else RQ's.
-- A client that becomes an owner of a job still queued or running joins it on its own terms: its
-- deadline is kept with the others' (the job's is the latest of them, none while any owner set
-- none: it stops only when no owner still wants it), and, in fair order, a queued job is lined up
-- in the client's own list too, so it runs at the earliest turn among its owners (the take skips
-- the copies of a job no longer queued). KEYS[8], KEYS[9]: the type's waiting clients, their use.
-- An abort is appended to the job's event stream (events.append's fields) and to RQ's canceled
-- registry too (KEYS[7]), so the dashboard counts it. A queued job past its Cancel-After deadline ends aborted here: it never runs.
-- First the client's rate-limit counter (a fixed window). Then, per job: refresh a queued job's
-- TTL and its pending deadline together, atomically, so a job a worker has just started (and
-- PERSISTed) is never given an expiry; answer its status, its input (kept in the description)
-- the outcome the worker cached as JSON, and a running job's progress; a job the checked client
-- does not own is answered as missing. Last, the type's load (live queued + running).
-- Every write may be refused (a full or read-only Redis): the poll still answers; the rate limit
-- then fails open.
local now = clock_tick(KEYS[4], KEYS[5], ARGV[4])
if KEYS[3] ~= '' then
  local hits = redis.pcall('INCRBY', KEYS[3], ARGV[15])
  if type(hits) == 'number' then
    if hits <= tonumber(ARGV[15]) then redis.pcall('EXPIRE', KEYS[3], ARGV[3]) end
    if hits > tonumber(ARGV[2]) then return {'throttled', redis.call('TTL', KEYS[3])} end
  end
end
local ttl = tonumber(ARGV[1])
local job_prefix = ARGV[5]
local failure_ttl, aborted_outcome = tonumber(ARGV[6]), ARGV[7]
local events_prefix, events_maxlen, events_ttl = ARGV[8], ARGV[9], ARGV[10]
local owners_prefix, claim, check, owners_ttl = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local state_field, rq_aborted, aborted = ARGV[16], ARGV[17], ARGV[18]
local claim_after, deadlines_prefix, clients_prefix = ARGV[19], ARGV[20], ARGV[21]

local function join(id, key, status)
  local deadlines = deadlines_prefix .. id
  if claim_after == '' then
    redis.pcall('HSET', deadlines, claim, 'none')
    redis.pcall('HDEL', key, 'factorize_deadline')
  else
    local mine = now + tonumber(claim_after)
    redis.pcall('HSET', deadlines, claim, mine)
    local current = tonumber(redis.call('HGET', key, 'factorize_deadline') or '')
    if current and mine > current then redis.pcall('HSET', key, 'factorize_deadline', mine) end
  end
  redis.pcall('EXPIRE', deadlines, owners_ttl)
  if status == 'queued' and clients_prefix ~= '' then
    redis.pcall('RPUSH', clients_prefix .. claim, id)
    if not redis.call('ZSCORE', KEYS[8], claim) then
      local level = tonumber(redis.call('HGET', KEYS[9], ':clock')) or 0
      local score = math.max(level, tonumber(redis.call('HGET', KEYS[9], claim)) or 0)
      redis.pcall('HSET', KEYS[9], claim, score)
      redis.pcall('ZADD', KEYS[8], score, claim)
    end
  end
end

local answers = {}
for i = 22, #ARGV do
  local key = job_prefix .. ARGV[i]
  local fields = redis.call('HMGET', key, 'status', 'description', 'factorize_outcome', 'factorize_progress',
    'factorize_deadline', state_field)
  if fields[1] == 'queued' and fields[5] and now > tonumber(fields[5]) then
    redis.pcall('HSET', key, 'status', rq_aborted, state_field, aborted, 'factorize_outcome', aborted_outcome)
    redis.pcall('EXPIRE', key, failure_ttl)
    redis.pcall('ZREM', KEYS[1], ARGV[i])
    redis.pcall('ZADD', KEYS[6], now + failure_ttl, ARGV[i])
    redis.pcall('ZADD', KEYS[7], now + failure_ttl, ARGV[i])
    append_event(redis.pcall, events_prefix .. ARGV[i], events_maxlen, events_ttl, aborted, aborted_outcome, '')
    fields[1], fields[3], fields[6] = rq_aborted, aborted_outcome, aborted
  end
  if fields[1] and claim ~= '' then
    -- A new owner, or a job still alive by its polls: the owners outlive it (a done job's do already).
    local added = redis.pcall('SADD', owners_prefix .. ARGV[i], claim)
    local live = fields[1] == 'queued' or fields[1] == 'started'
    if added == 1 or live then
      redis.pcall('EXPIRE', owners_prefix .. ARGV[i], owners_ttl)
    end
    if added == 1 and live then join(ARGV[i], key, fields[1]) end
  elseif fields[1] and check ~= '' and redis.call('SISMEMBER', owners_prefix .. ARGV[i], check) == 0 then
    fields[1] = false
  end
  if fields[1] then
    if fields[1] == 'queued' then
      redis.pcall('EXPIRE', key, ttl)
      redis.pcall('ZADD', KEYS[1], now + ttl, ARGV[i])
    end
    answers[#answers + 1] = {fields[6] or fields[1], fields[2] or '', fields[3] or '', fields[4] or ''}
  else
    answers[#answers + 1] = false
  end
end
return {'ok', redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') + redis.call('ZCARD', KEYS[2]), answers}
