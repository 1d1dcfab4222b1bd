-- Store a freshly loaded entry unless the row was invalidated since it was read.
-- KEYS[1]: the entry, KEYS[2]: its generation. ARGV[1]: the entry, ARGV[2]: its lifetime in
-- ms, ARGV[3]: the generation seen before loading.
-- Without this check a reader that loaded the old row just before a write committed would put
-- the old row back right after the writer's invalidation, for a whole TTL.
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
