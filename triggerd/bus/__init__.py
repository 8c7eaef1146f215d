"""Kafka: the job message (§4), the producer the scheduler/API publish with, and the
consumer the worker reads with."""
