-- A reader's first look at a job's events opens its stream (an empty one, if it has none: an
-- entry added and trimmed at once), so that from then on every change of the job is appended to
-- it (append_event.lua). Its TTL is set, or lengthened to `ttl` if it was shorter.
--- KEYS: events
--- ARGV: ttl
if redis.call('EXISTS', K.events) == 0 then
  redis.call('XADD', K.events, 'MAXLEN', 0, '*', EVENT.status, '')
  redis.call('EXPIRE', K.events, A.ttl)
else
  redis.call('EXPIRE', K.events, A.ttl, 'GT')
end
return 1
