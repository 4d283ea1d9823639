"""Where runs are remembered: the history (SQLAlchemy) and the active state (memory, Redis)."""
