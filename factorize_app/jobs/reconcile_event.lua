-- A job's event for a status RQ gave it behind the service's back (found by reconcile.lua):
-- appended only if the job still has that status and its newest event says otherwise, in one
-- step, so that an event the service wrote meanwhile is never followed by a stale one. A done
-- job's outcome is kept in its hash too, for polls.
-- KEYS: the job hash, its event stream.
-- ARGV: the status, the outcome JSON ('' for none), our state field, the stream's length, its TTL.
local fields = redis.call('HMGET', KEYS[1], 'status', ARGV[3])
if (fields[2] or fields[1]) ~= ARGV[1] or last_event_status(KEYS[2]) == ARGV[1] then return 0 end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'factorize_outcome', ARGV[2]) end
append_event(redis.call, KEYS[2], ARGV[4], ARGV[5], ARGV[1], ARGV[2], '')
return 1
