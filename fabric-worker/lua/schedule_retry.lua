-- Park a failed entry for a later attempt and acknowledge the current one, atomically.
-- KEYS[1] stream; KEYS[2] retry sorted set (same slot)
-- ARGV: group, stream_id, delay_ms, member (JSON {"fields": [...]} built by the client)
-- The due time uses the server clock, so workers with skewed clocks agree.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[3]), ARGV[4])
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
