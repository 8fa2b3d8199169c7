-- A job's owners are kept at least `ttl` seconds from now (its files outlive it): a job with one
-- owner, named in its hash, gets its owners' set now (its deadline beside it, as when a second
-- owner joins), so that they outlive its hash; an existing set's expiry is only ever lengthened.
--- KEYS: job owners deadlines
--- ARGV: ttl
-- job: the job's hash; owners, deadlines: its owners' set and their deadlines.
local fields = redis.call('HMGET', K.job, JOB.owner, JOB.deadline)
if fields[1] then -- it has no set (one is made only with the field's removal)
  redis.call('SADD', K.owners, fields[1])
  redis.call('HSET', K.deadlines, fields[1], fields[2] or NO_DEADLINE)
  redis.call('HDEL', K.job, JOB.owner)
  redis.call('EXPIRE', K.owners, A.ttl)
  redis.call('EXPIRE', K.deadlines, A.ttl)
else
  redis.call('EXPIRE', K.owners, A.ttl, 'GT')
  redis.call('EXPIRE', K.deadlines, A.ttl, 'GT')
end
return 1
