-- Release a mutex only if this caller still owns it: after its lease expired another caller may
-- hold it, and a plain DEL would release theirs.
-- KEYS[1]: the mutex. ARGV[1]: the owner token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
