"""The store: every SQL statement the daemon runs lives in this package."""
