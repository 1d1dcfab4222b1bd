-- Invalidate an entry: drop it and raise its generation, so a load that started before cannot
-- store what it read. KEYS[1]: the entry, KEYS[2]: its generation. ARGV[1]: the generation's
-- lifetime in ms (longer than any entry's, so it outlives every load that could race it).
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
