-- Scripts that append to a job's event stream start with this: one entry with the fields
-- events.append writes (status, outcome, progress), capped at `maxlen`, and the stream's expiry.
-- `call` is redis.call, or redis.pcall where a refused write must not stop the script.
local function append_event(call, key, maxlen, ttl, status, outcome, progress)
  call('XADD', key, 'MAXLEN', '~', maxlen, '*', 'status', status, 'outcome', outcome, 'progress', progress)
  call('EXPIRE', key, ttl)
end
