-- Every script that serves the queue starts with this (see maintenance.py): tick the queue's clock
-- (Redis time), and record an outage when the clock is older than OUTAGE_GAP seconds. The clock is
-- written at most once a second (a write per poll would cost the hot path for nothing: the gap is
-- seconds). A Redis refusing writes refuses the tick too; the script carries on (pcall). Answers the time.
local function clock_tick(clock_key, outages_key)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
  local last = tonumber(redis.call('GET', clock_key) or '')
  if last and now - last > OUTAGE_GAP then redis.pcall('RPUSH', outages_key, last .. ' ' .. now) end
  if not last or now - last >= 1 then redis.pcall('SET', clock_key, tostring(now)) end
  return now
end
