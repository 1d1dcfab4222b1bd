-- Bloom filter on a plain Redis bitmap (this Redis has no modules).
-- KEYS[1]: the bitmap. ARGV[1]: 'add' or 'check'; ARGV[2..]: the bit positions of one item,
-- computed by the client (double hashing), so the script only touches bits.
-- check: 1 if every bit is set (the item may be present), 0 if one is clear (it is not).
-- add: sets the bits; returns 1.
local op = ARGV[1]
if op == 'add' then
    for i = 2, #ARGV do
        redis.call('SETBIT', KEYS[1], ARGV[i], 1)
    end
    return 1
end
for i = 2, #ARGV do
    if redis.call('GETBIT', KEYS[1], ARGV[i]) == 0 then
        return 0
    end
end
return 1
