"""Webhook and test-run ingestion: the group-commit writer, its fast-path publisher and
the outbox clearer (`pipeline`). The daemon builds one pipeline per process running the
`api` role and the supervisor runs it as the `ingest` component."""
