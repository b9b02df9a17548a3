-- SharedSecret: keep the first secret proposed; return the one kept.
-- (SET NX GET would do, but only from Redis 7.0.)
-- KEYS: secret
-- ARGV: proposal
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
