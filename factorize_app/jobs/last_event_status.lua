-- Scripts that compare a job's status with its event stream start with this: the status of the
-- stream's newest entry (nil for an empty stream; false for none: nobody reads the job's events,
-- so there is nothing to answer).
local function last_event_status(key)
  if redis.call('EXISTS', key) == 0 then return false end
  local entries = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #entries == 0 then return nil end
  local fields = entries[1][2]
  for j = 1, #fields, 2 do
    if fields[j] == EVENT.status then return fields[j + 1] end
  end
  return nil
end
