"""triggerd — an event trigger platform in one asyncio daemon."""

__version__ = "0.1.0"
