"""Child processes: one supervisor (own process group, readiness with a deadline, TERM then
KILL), free loopback ports, and a real `redis-server` for tests, benchmarks and the stack.

Bottom layer beside `services.contracts`: it imports nothing else of Switchyard.
"""
