-- The clock's tick alone.
--- KEYS: clock outages
--- ARGV:
clock_tick(K.clock, K.outages)
return 1
