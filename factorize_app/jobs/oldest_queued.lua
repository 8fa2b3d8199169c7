-- When the oldest queued job of a type was enqueued: the first id from the head of RQ's list
-- (enqueue order: RQ appends, workers take from the head) whose job hash is still queued. Ids
-- ahead of it that are no longer queued (taken in fair order, cancelled, expired) are skipped,
-- up to ARGV[5] ids looked at in all, so that a scrape costs a bounded number of reads; past
-- that, the last one's enqueue time stands in (the oldest queued job is no older than it).
-- Read-only: it answers on a full Redis.
-- KEYS: the type's RQ list.
-- ARGV: the job hash prefix, the status field, the queued status word, the enqueue time field,
-- the most ids looked at.
-- Answers {enqueued_at or false (nothing queued), Redis time's seconds, its microseconds}.
local prefix, status_field, queued, enqueued_field = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
local t = redis.call('TIME')
local chunk = 100
local start, last = 0, false
while start < limit do
  local ids = redis.call('LRANGE', KEYS[1], start, math.min(start + chunk, limit) - 1)
  for _, id in ipairs(ids) do
    local fields = redis.call('HMGET', prefix .. id, status_field, enqueued_field)
    if fields[1] == queued and fields[2] then return {fields[2], t[1], t[2]} end
    last = fields[2] or last
  end
  if #ids < math.min(chunk, limit - start) then return {false, t[1], t[2]} end
  start = start + chunk
end
return {last, t[1], t[2]}
