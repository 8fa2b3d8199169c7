-- Running jobs' streamed output pieces, in one round trip: each piece added to the job's output
-- (a JSON array in its hash, each piece's event id beside it) and appended as an `output` event,
-- only while the job is still started (as progress: a write that comes after the job's end is
-- dropped, so no event follows the done one). A run's first piece (index 0) starts the output
-- anew: a job run again (its worker died, its batch call failed) streams from the start.
--- KEYS: jobs[hash events]
--- ARGV: writes[ttl first #pieces]
-- Per job: its hash and its event stream; and, in the same order, its write: the stream's TTL,
-- the index of its first piece here, and the pieces (JSON, checked against the limits by the worker).
for n, job in ipairs(jobs) do
  local write = writes[n]
  if redis.call('HGET', job.hash, JOB.status) == STATUS.started then
    local index = tonumber(write.first)
    local kept = {false, false}
    if index > 0 then kept = redis.call('HMGET', job.hash, JOB.output, JOB.output_ids) end
    local ids = {}
    for i, piece in ipairs(write.pieces) do
      ids[i] = append_event(redis.call, job.events, write.ttl, STATUS.started, '', '', piece, index + i - 1)
    end
    local body = table.concat(write.pieces, ',')
    local output = kept[1] and (string.sub(kept[1], 1, -2) .. ',' .. body .. ']') or ('[' .. body .. ']')
    local id_list = table.concat(ids, ' ')
    if kept[2] then id_list = kept[2] .. ' ' .. id_list end
    redis.call('HSET', job.hash, JOB.output, output, JOB.output_ids, id_list)
  end
end
return #jobs
