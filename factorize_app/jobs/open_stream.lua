-- A reader's first look at a job's events opens its stream (an empty one, if it has none: an
-- entry added and trimmed at once), so that from then on every change of the job is appended to
-- it (append_event.lua). Its TTL is set, or lengthened to `ttl` if it was shorter. `call` is
-- redis.call, or redis.pcall where a refused write must not stop the script.
local function open_stream(call, key, ttl)
  if redis.call('EXISTS', key) == 0 then
    call('XADD', key, 'MAXLEN', 0, '*', EVENT.status, '')
    call('EXPIRE', key, ttl)
  else
    call('EXPIRE', key, ttl, 'GT')
  end
end
