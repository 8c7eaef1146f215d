"""The heap-based scheduler."""
