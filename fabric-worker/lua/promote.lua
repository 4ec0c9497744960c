-- Move retries whose time has come back into the stream.
-- KEYS[1] stream; KEYS[2] retry sorted set (same slot); ARGV: limit
-- Returns {moved, ms_until_next_due or -1}
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local ok, v = pcall(cjson.decode, m)
  if ok and type(v) == 'table' and type(v['fields']) == 'table' and #v['fields'] >= 2 then
    redis.call('XADD', KEYS[1], '*', unpack(v['fields']))
  end
  redis.call('ZREM', KEYS[2], m)
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if nxt[2] then
  local wait = tonumber(nxt[2]) - now_ms
  if wait < 0 then wait = 0 end
  return {#due, wait}
end
return {#due, -1}
