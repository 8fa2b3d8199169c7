-- A reader's first look at a job's events opens its stream (open_stream.lua).
--- KEYS: events
--- ARGV: ttl
open_stream(redis.call, K.events, A.ttl)
return 1
