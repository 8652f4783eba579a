"""Contract tests: one test file per interface, every test run against every backend."""
