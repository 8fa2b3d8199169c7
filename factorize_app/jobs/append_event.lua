-- The one writer of a job's events: every script that changes a job appends its event with this,
-- in the same step (Python appends through event.lua). Only to a stream someone opened (a
-- reader's first look opens it: open_events.lua): a job nobody watches costs one EXISTS per
-- change, and a reader misses nothing from its first look on. One entry of the fields
-- events.JobEvent reads, the stream capped at about EVENTS_MAXLEN entries, and its expiry.
-- `call` is redis.call, or redis.pcall where a refused write must not stop the script. An
-- `output` event (output.lua) also carries its piece's JSON and index. Answers the entry's id, or
-- UNSENT_EVENT_ID when the stream is not open (below every id a reader can resume from).
local function append_event(call, key, ttl, status, outcome, progress, output, index)
  if call('EXISTS', key) ~= 1 then return UNSENT_EVENT_ID end
  local id
  if output then
    id = call('XADD', key, 'MAXLEN', '~', EVENTS_MAXLEN, '*', EVENT.status, status, EVENT.outcome, outcome,
      EVENT.progress, progress, EVENT.output, output, EVENT.index, index)
  else
    id = call('XADD', key, 'MAXLEN', '~', EVENTS_MAXLEN, '*', EVENT.status, status, EVENT.outcome, outcome,
      EVENT.progress, progress)
  end
  call('EXPIRE', key, ttl)
  return id
end
