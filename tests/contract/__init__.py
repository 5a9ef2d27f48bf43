"""Contract tests: third-party clients of the provider API against the simulator."""
