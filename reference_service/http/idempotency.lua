-- Idempotency-Key state for one (tenant, key), in one hash, decided in one round trip.
--
-- KEYS[1]  the record: fields fp (request fingerprint), state ("lock" | "done"), token (the
--          owner of the lock), and once done: status, headers, body.
-- ARGV[1]  mode: "begin" | "store" | "release"
--
-- begin   ARGV[2] fingerprint, ARGV[3] owner token, ARGV[4] lock TTL (ms)
--         -> {"new"}                            the caller now owns the lock and runs the request
--                                               (also when it already held it with this token)
--         -> {"mismatch"}                       the key was used with another request (422)
--         -> {"busy", pttl}                     the first request is still running (409)
--         -> {"done", status, headers, body}    the stored response, to replay
-- store   ARGV[2] owner token, ARGV[3] TTL (ms), ARGV[4] status, ARGV[5] headers, ARGV[6] body
--         -> 1 stored, 0 refused: the caller no longer owns the lock (it expired and another
--            request took the key over), so its response must not overwrite the new owner's.
-- release ARGV[2] owner token -> 1 deleted, 0 not the owner (nothing done)

local key = KEYS[1]
local mode = ARGV[1]

if mode == "begin" then
  local rec = redis.call("HMGET", key, "fp", "state", "status", "headers", "body", "token")
  if not rec[1] then
    redis.call("HSET", key, "fp", ARGV[2], "state", "lock", "token", ARGV[3])
    redis.call("PEXPIRE", key, ARGV[4])
    return {"new"}
  end
  -- The payload check comes first: a different request under a used key is a client bug
  -- whatever the state of the first one.
  if rec[1] ~= ARGV[2] then
    return {"mismatch"}
  end
  if rec[2] == "lock" then
    -- The same claim asked again (its first answer was lost to a timeout): it is still ours.
    if rec[6] == ARGV[3] then
      return {"new"}
    end
    return {"busy", redis.call("PTTL", key)}
  end
  return {"done", rec[3], rec[4], rec[5]}
end

-- store and release: only the owner of a live lock may finish it.
local rec = redis.call("HMGET", key, "state", "token")
if rec[1] ~= "lock" or rec[2] ~= ARGV[2] then
  return 0
end

if mode == "store" then
  redis.call("HSET", key, "state", "done", "status", ARGV[4], "headers", ARGV[5], "body", ARGV[6])
  redis.call("HDEL", key, "token")
  redis.call("PEXPIRE", key, ARGV[3])
  return 1
end

if mode == "release" then
  redis.call("DEL", key)
  return 1
end

return redis.error_reply("unknown mode " .. tostring(mode))
