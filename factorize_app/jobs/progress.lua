-- Running jobs' latest progress, in one round trip: written to each job's hash and appended to
-- its event stream, only while the job is still started. The worker records results and writes
-- progress at different moments, so a report may arrive after its job's end: it is dropped, and
-- no event ever follows a job's done event.
--- KEYS: jobs[hash events]
--- ARGV: jobs[progress ttl]
-- Per job: its hash, its event stream, its progress JSON, its stream's TTL.
for _, job in ipairs(jobs) do
  if redis.call('HGET', job.hash, JOB.status) == STATUS.started then
    redis.call('HSET', job.hash, JOB.progress, job.progress)
    append_event(redis.call, job.events, job.ttl, STATUS.started, '', job.progress)
  end
end
return #jobs
