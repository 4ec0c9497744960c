-- Reclaim entries idle longer than min-idle from any consumer of the group, and report
-- each claimed entry's delivery count (XAUTOCLAIM does not return it).
-- KEYS[1] stream; ARGV: group, consumer, min_idle_ms, start_id, count
-- Returns {next_cursor, claimed_entries, deleted_ids, delivery_counts}
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local counts = {}
for i, e in ipairs(r[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  if p[1] then counts[i] = p[1][4] else counts[i] = 0 end
end
return {r[1], r[2], r[3] or {}, counts}
