-- When the oldest queued job of a type was enqueued: the first id from the head of RQ's list
-- (enqueue order: RQ appends, workers take from the head) whose job hash is still queued. Ids
-- ahead of it that are no longer queued (taken in fair order, cancelled, expired) are skipped,
-- up to `limit` ids looked at in all, so that a scrape costs a bounded number of reads; past
-- that, the last one's enqueue time stands in (the oldest queued job is no older than it).
-- Read-only: it answers on a full Redis.
--- KEYS: list
--- ARGV: limit
-- list: the type's RQ list.
-- Answers {enqueued_at or false (nothing queued), Redis time's seconds, its microseconds}.
local limit = tonumber(A.limit)
local t = redis.call('TIME')
local chunk = 100
local start, last = 0, false
while start < limit do
  local ids = redis.call('LRANGE', K.list, start, math.min(start + chunk, limit) - 1)
  for _, id in ipairs(ids) do
    local fields = redis.call('HMGET', PREFIX.job .. id, JOB.status, JOB.enqueued_at)
    if fields[1] == STATUS.queued and fields[2] then return {fields[2], t[1], t[2]} end
    last = fields[2] or last
  end
  if #ids < math.min(chunk, limit - start) then return {false, t[1], t[2]} end
  start = start + chunk
end
return {last, t[1], t[2]}
