-- One event of a job appended for Python (a job handed back to the queue), as every script
-- appends its own (append_event.lua).
--- KEYS: events
--- ARGV: ttl status outcome progress
append_event(redis.call, K.events, A.ttl, A.status, A.outcome, A.progress)
return 1
