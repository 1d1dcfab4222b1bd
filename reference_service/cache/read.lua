-- One round trip for a cache read: the Bloom filter's verdict, the entry and its generation.
-- KEYS[1]: the filter's bitmap, KEYS[2]: its "built" marker, KEYS[3]: the entry, KEYS[4]: the
-- entry's generation (raised by every invalidation). ARGV: the item's bit positions.
-- Returns {filter, entry, generation}: filter -1 while the filter is not built (it cannot
-- refuse anything yet), 0 when the item is certainly absent (nothing else is read), 1 when it
-- may exist.
local filter = -1
if redis.call('EXISTS', KEYS[2]) == 1 then
    filter = 1
    for i = 1, #ARGV do
        if redis.call('GETBIT', KEYS[1], ARGV[i]) == 0 then
            return {0, false, false}
        end
    end
end
return {filter, redis.call('GET', KEYS[3]), redis.call('GET', KEYS[4]) or '0'}
