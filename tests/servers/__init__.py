"""Stand-ins for external services, as real servers the tests start."""
