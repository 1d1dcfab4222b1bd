-- One rate-limit decision in one round trip: read the bucket, decide, write it back.
--
-- KEYS[1]  the bucket key
-- ARGV[1]  algorithm: "GCRA" or "TokenBucket"
-- ARGV[2]  emission interval in microseconds (period / requests): one request's worth of time
-- ARGV[3]  burst: requests admitted back to back from a full bucket
-- ARGV[4]  "1" to only look: decide as if the request were charged, write nothing
--
-- Returns {allowed (1|0), remaining, reset_us, retry_after_us}:
--   remaining       requests still admitted right now after this decision
--   reset_us        microseconds until the bucket is full again (the whole burst available)
--   retry_after_us  microseconds until the next request would be admitted (0 when remaining > 0)
--
-- The clock is the Redis server's (TIME), not the callers': every replica then measures the
-- same bucket against the same clock, whatever their own clocks' skew. Values are formatted
-- with %.0f / %.6f because Lua's default number-to-string keeps only 14 significant digits,
-- which would truncate a microsecond timestamp.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local capacity = interval * burst
local peek = ARGV[4] == '1'

if ARGV[1] == 'GCRA' then
  -- TAT (theoretical arrival time): when the bucket would be full again if nothing else came.
  local tat = tonumber(redis.call('GET', KEYS[1]))
  if tat == nil or tat < now then
    tat = now
  end
  local new_tat = tat + interval
  local allow_at = new_tat - capacity
  if now < allow_at then
    -- Rejected: nothing is written, so rejected requests do not push the bucket further out.
    return {0, 0, tat - now, allow_at - now}
  end
  -- The key lives exactly as long as it carries information: once TAT has passed, a missing
  -- key and a stored one mean the same full bucket.
  if not peek then redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
    math.ceil((new_tat - now) / 1000) + 1) end
  local remaining = math.floor((now - allow_at) / interval)
  local retry = 0
  if remaining < 1 then
    retry = new_tat + interval - capacity - now
  end
  return {1, remaining, new_tat - now, retry}
end

-- Token bucket: `tokens` refilled continuously at one per interval, up to `burst`.
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(stored[1])
local ts = tonumber(stored[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) / interval)
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
local reset = math.ceil((burst - tokens) * interval)
if allowed == 1 and not peek then
  redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
    'ts', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[1], math.ceil(reset / 1000) + 1)
end
local retry = 0
if tokens < 1 then
  retry = math.ceil((1 - tokens) * interval)
end
return {allowed, math.floor(tokens), reset, retry}
