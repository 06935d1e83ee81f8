"""Durable job state: one contract (base.JobStore), SQLite by default."""
