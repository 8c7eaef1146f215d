"""Kafka: the job message, the producer the scheduler/API publish with, and the
consumer the worker reads with."""
