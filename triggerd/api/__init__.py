"""The HTTP API role: aiohttp routes under /api/v1, request validation, redaction."""
