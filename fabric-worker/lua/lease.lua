-- Keep the lease of in-flight entries: reset their idle time (XCLAIM ... JUSTID does not
-- bump the delivery counter), but only for entries this consumer still owns.
-- KEYS[1] stream; ARGV: group, consumer, id...
-- Returns the ids now owned by another consumer (entries no longer pending at all were
-- acknowledged meanwhile and are not reported).
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      lost[#lost + 1] = ARGV[i]
    end
  end
end
return lost
