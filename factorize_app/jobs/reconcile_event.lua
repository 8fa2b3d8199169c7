-- A job's event for a status RQ gave it behind the service's back (found by reconcile.lua):
-- appended only if the job still has that status and its newest event says otherwise, in one
-- step, so that an event the service wrote meanwhile is never followed by a stale one. A done
-- job's outcome is kept in its hash too, for polls.
--- KEYS: job events
--- ARGV: status outcome ttl
-- job, events: its hash and event stream; outcome: its JSON ('' for none); ttl: the stream's.
local fields = redis.call('HMGET', K.job, JOB.status, JOB.state)
if (fields[2] or fields[1]) ~= A.status or last_event_status(K.events) == A.status then return 0 end
if A.outcome ~= '' then redis.call('HSET', K.job, JOB.outcome, A.outcome) end
append_event(redis.call, K.events, A.ttl, A.status, A.outcome, '')
return 1
