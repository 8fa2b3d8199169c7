-- The clock's tick alone. KEYS: the clock, the outages. ARGV: the outage gap.
clock_tick(KEYS[1], KEYS[2], ARGV[1])
return 1
