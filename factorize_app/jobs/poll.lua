-- One round trip per poll of one job or a batch of them.
--- KEYS: pending started throttle clock outages aborted canceled waiting used
--- ARGV: job_ttl limit window cost failure_ttl aborted_outcome events_ttl owners_ttl claim claim_after check
---   clients_prefix open_ttl ids*
-- pending, started, aborted, canceled: the type's pending set and registries; throttle: the
-- client's rate-limit counter ('' for none), counting `cost` (a batch: one per item) against
-- `limit` per `window`; waiting, used: the type's waiting clients and their use (fair order).
-- claim: the client claiming the jobs ('' for none: a submit makes its client an owner), with its
-- Cancel-After seconds `claim_after` ('' for none); check: the client who must own them ('' for
-- none: with API keys, a job read by id); clients_prefix: of the type's clients' lists ('' in FIFO
-- order); events_ttl: a done job's event stream's. A job's answered status is our state where we
-- keep one, else RQ's. open_ttl: a stream's first look ('' for none): each job found has its event
-- stream opened (open_stream.lua, this TTL at least) before anything else is read or written, and
-- its newest entry's id answered with it, so that the reader's cursor and the state it is sent
-- are of one instant.
-- A job's one owner is named in its hash (JOB.owner); a second owner's joining makes the owners a
-- set (with their deadlines beside it) and removes the field: the set names them from then on.
-- A client that becomes an owner of a job still queued or running joins it on its own terms: its
-- deadline is kept with the others' (the job's is the latest of them, none while any owner set
-- none: it stops only when no owner still wants it), and, in fair order, a queued job is lined up
-- in the client's own list too, so it runs at the earliest turn among its owners (the take skips
-- the copies of a job no longer queued).
-- A queued job past its Cancel-After deadline ends aborted here: it never runs. Its event is
-- appended, and it joins RQ's canceled registry too, so the dashboard counts it.
-- First the client's rate-limit counter (a fixed window). Then, per job: refresh a queued job's
-- TTL and its pending deadline together, atomically, so a job a worker has just started (and
-- PERSISTed) is never given an expiry; answer its status, its input (kept in the description)
-- the outcome the worker cached as JSON, a running job's progress and a streaming job's output
-- so far (in the same HMGET: no command more for a job that streams nothing); a job the checked client
-- does not own is answered as missing. Last, the type's load (live queued + running) and, when a
-- job is missing and a client claims them in fair order, its queued jobs (its list's length, for
-- its cap: the submit enqueues the missing ones next; -1: not counted).
-- Every write may be refused (a full or read-only Redis): the poll still answers; the rate limit
-- then fails open. All but a stream's opening: a stream that could not open would miss the job's
-- events, so that poll fails (its reader answers 503, as when it opened the stream by itself).
local now = clock_tick(K.clock, K.outages)
if K.throttle ~= '' then
  local hits = redis.pcall('INCRBY', K.throttle, A.cost)
  if type(hits) == 'number' then
    if hits <= tonumber(A.cost) then redis.pcall('EXPIRE', K.throttle, A.window) end
    if hits > tonumber(A.limit) then return {ANSWER.throttled, redis.call('TTL', K.throttle)} end
  end
end
local ttl, failure_ttl = tonumber(A.job_ttl), tonumber(A.failure_ttl)
local claim, check = A.claim, A.check

local function join(id, key, status)
  local deadlines = PREFIX.deadlines .. id
  if A.claim_after == '' then
    redis.pcall('HSET', deadlines, claim, NO_DEADLINE)
    redis.pcall('HDEL', key, JOB.deadline)
  else
    local mine = now + tonumber(A.claim_after)
    redis.pcall('HSET', deadlines, claim, mine)
    local current = tonumber(redis.call('HGET', key, JOB.deadline) or '')
    if current and mine > current then redis.pcall('HSET', key, JOB.deadline, mine) end
  end
  redis.pcall('EXPIRE', deadlines, A.owners_ttl)
  if status == STATUS.queued and A.clients_prefix ~= '' then
    redis.pcall('RPUSH', A.clients_prefix .. claim, id)
    if not redis.call('ZSCORE', K.waiting, claim) then
      local level = tonumber(redis.call('HGET', K.used, FAIR_CLOCK)) or 0
      local score = math.max(level, tonumber(redis.call('HGET', K.used, claim)) or 0)
      redis.pcall('HSET', K.used, claim, score)
      redis.pcall('ZADD', K.waiting, score, claim)
    end
  end
end

local answers, missing = {}, false
for _, id in ipairs(ids) do
  local key = PREFIX.job .. id
  local fields = redis.call('HMGET', key, JOB.status, JOB.description, JOB.outcome, JOB.progress, JOB.deadline,
    JOB.state, JOB.output, JOB.owner)
  local owner = fields[8] -- its one owner, or none: its owners' set names them
  local opened = fields[1] and A.open_ttl ~= ''
  if opened then open_stream(redis.call, PREFIX.events .. id, A.open_ttl) end
  if fields[1] == STATUS.queued and fields[5] and now > tonumber(fields[5]) then
    -- RQ's word for it is canceled; ours, aborted.
    redis.pcall('HSET', key, JOB.status, STATUS.canceled, JOB.state, STATUS.aborted, JOB.outcome, A.aborted_outcome)
    redis.pcall('EXPIRE', key, failure_ttl)
    redis.pcall('ZREM', K.pending, id)
    redis.pcall('ZADD', K.aborted, now + failure_ttl, id)
    redis.pcall('ZADD', K.canceled, now + failure_ttl, id)
    append_event(redis.pcall, PREFIX.events .. id, A.events_ttl, STATUS.aborted, A.aborted_outcome, '')
    fields[1], fields[3], fields[6] = STATUS.canceled, A.aborted_outcome, STATUS.aborted
  end
  if fields[1] and claim ~= '' and owner ~= claim then -- (its one owner polls: nothing to write)
    local owners, added = PREFIX.owners .. id, nil
    local live = fields[1] == STATUS.queued or fields[1] == STATUS.started
    if owner then
      -- A second owner: the owners become a set, the first's deadline (the job's) kept beside it.
      added = redis.pcall('SADD', owners, owner, claim)
      if type(added) == 'number' then
        added = 1
        redis.pcall('HSET', PREFIX.deadlines .. id, owner, fields[5] or NO_DEADLINE)
        redis.pcall('EXPIRE', PREFIX.deadlines .. id, A.owners_ttl)
        redis.pcall('HDEL', key, JOB.owner)
      end
    else
      added = redis.pcall('SADD', owners, claim)
    end
    -- A new owner, or a job still alive by its polls: the owners outlive it (a done job's do already).
    if added == 1 or live then
      redis.pcall('EXPIRE', owners, A.owners_ttl)
    end
    if added == 1 and live then join(id, key, fields[1]) end
  elseif fields[1] and check ~= '' and owner ~= check
      and (owner or redis.call('SISMEMBER', PREFIX.owners .. id, check) == 0) then
    fields[1] = false
  end
  if fields[1] then
    if fields[1] == STATUS.queued then
      redis.pcall('EXPIRE', key, ttl)
      redis.pcall('ZADD', K.pending, now + ttl, id)
    end
    local newest = opened and redis.call('XREVRANGE', PREFIX.events .. id, '+', '-', 'COUNT', 1)[1]
    answers[#answers + 1] = {fields[6] or fields[1], fields[2] or '', fields[3] or '', fields[4] or '', fields[7] or '',
      newest and newest[1] or ''}
  else
    answers[#answers + 1], missing = false, true
  end
end
local queued = -1
if missing and claim ~= '' and A.clients_prefix ~= '' then queued = redis.call('LLEN', A.clients_prefix .. claim) end
return {ANSWER.ok, redis.call('ZCOUNT', K.pending, '(' .. now, '+inf') + redis.call('ZCARD', K.started), answers, queued}
