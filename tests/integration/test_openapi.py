"""The OpenAPI 3 document and Swagger UI: every registered route
documented with its responses, served from the package, and a schemathesis run
against a live daemon finding no 5xx and no response that breaks the document."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
from aiohttp import web
from yarl import URL

from tests.integration.api_daemon import ApiDaemon, Client, api_daemon
from triggerd.api import console, docs
from triggerd.api.app import build_app
from triggerd.bus.producer import Bus
from triggerd.config import Settings
from triggerd.ingest.pipeline import IngestPipeline
from triggerd.metrics import Metrics
from triggerd.services import Services
from triggerd.store.db import Database

KEY = "openapi-test-key"

# Every operation the API reference names, with the daemon's own routes beside them.
API_OPERATIONS = {
    ("POST", "/api/v1/triggers"), ("GET", "/api/v1/triggers"),
    ("GET", "/api/v1/triggers/{id}"), ("PUT", "/api/v1/triggers/{id}"),
    ("PATCH", "/api/v1/triggers/{id}"), ("DELETE", "/api/v1/triggers/{id}"),
    ("POST", "/api/v1/triggers/test"), ("POST", "/api/v1/triggers/{id}/test"),
    ("GET", "/api/v1/triggers/{id}/upcoming"), ("POST", "/api/v1/triggers/preview"),
    ("GET", "/api/v1/triggers/{id}/occurrences"), ("POST", "/api/v1/triggers/{id}/backfill"),
    ("POST", "/api/v1/webhook/{trigger_id}"),
    ("GET", "/api/v1/events"), ("GET", "/api/v1/events/{id}"),
    ("GET", "/api/v1/events/stats"), ("POST", "/api/v1/events/{id}/replay"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/endpoints"), ("GET", "/api/v1/access"),
    ("GET", "/health"), ("GET", "/metrics"),
    ("GET", "/api/docs"), ("GET", "/api/docs/swagger.json"),
}  # fmt: skip
# Both schemes, either one enough.
SECURITY = [{"bearerAuth": []}, {"apiKeyAuth": []}]


def build(*keys: str) -> tuple[web.Application, dict[str, Any]]:
    """The api process's app as the daemon builds it (nothing connects), and its document."""
    settings = Settings(database_url="mysql://u@127.0.0.1/db", api_keys=keys)
    services = Services(settings=settings, db=Database(settings.database), bus=Bus(settings),
                        metrics=Metrics())  # fmt: skip
    app = build_app(services, with_api=True,
                    ingest=IngestPipeline(services.db, services.bus, services.metrics))
    document = docs.build_document(app)
    # As the daemon serves it: the console's routes (registered after the document was
    # built) are a web page and its files, not API operations.
    document["paths"] = {path: item for path, item in document["paths"].items()
                         if not path.startswith(console.UI_PATH)}  # fmt: skip
    return app, document


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method.upper(), path): op
            for path, item in document["paths"].items() for method, op in item.items()}  # fmt: skip


def shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_the_table_covers_every_operation_of_the_spec() -> None:
    table = {(method, shape(path)) for method, path in docs.OPERATIONS}
    assert {(method, shape(path)) for method, path in API_OPERATIONS} <= table


@pytest.mark.parametrize("keys", [(), (KEY,)], ids=["open", "secured"])
def test_every_registered_route_is_documented_with_its_responses(keys: tuple[str, ...]) -> None:
    app, document = build(*keys)
    documented = operations(document)
    routes = docs.registered_routes(app)
    assert {(m, shape(p)) for m, p in API_OPERATIONS} <= {(m, shape(p)) for m, p in routes}
    # No directory served wholesale: every route, the UI's files included, is documented.
    assert not [r for r in app.router.resources() if isinstance(r, web.StaticResource)]
    api_routes = [r for r in app.router.routes() if r.resource is not None
                  and not r.resource.canonical.startswith(console.UI_PATH)]  # fmt: skip
    for route in api_routes:
        assert route.resource is not None
        key = (route.method, route.resource.canonical)
        assert key in documented, key
        op = documented[key]
        assert op["tags"] != ["undocumented"], key
        assert op["summary"] and op["operationId"], key
        statuses = set(op["responses"])
        assert any(status.startswith(("2", "3")) for status in statuses), key
        for status, response in op["responses"].items():
            assert response["description"]
            assert "X-Request-ID" in response["headers"], (key, status)
            if status.startswith(("4", "5")) and key[1].startswith(("/api/v1", "/api/docs")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (key, status)
        replay = route.resource.canonical == "/api/v1/events/{id}/replay"
        if route.method in ("POST", "PUT", "PATCH") and not replay:
            assert "requestBody" in op, key
            assert {"400", "413", "415"} <= statuses, key
        if "{" in route.resource.canonical and route.resource.canonical.startswith("/api/v1"):
            assert "404" in statuses, key
    assert len(documented) == len(api_routes)
    assert {(m, p) for m, p in routes if p.startswith(console.UI_PATH)} == {
        ("GET", "/ui"), ("GET", "/ui/"), ("GET", "/ui/static/{name}")}


def test_the_document_is_valid_openapi_3() -> None:
    from schemathesis.specs.openapi.definitions import OPENAPI_30

    validator = jsonschema_rs.Draft4Validator(OPENAPI_30)
    for keys in ((), (KEY,)):
        _, document = build(*keys)
        assert document["openapi"].startswith("3.0")
        errors = [str(error) for error in validator.iter_errors(document)]
        assert errors == []
        refs = set(re.findall(r'"#/components/schemas/([^"]+)"', str(document).replace("'", '"')))
        assert refs <= set(document["components"]["schemas"])


def test_request_schemas_are_closed_and_typed() -> None:
    _, document = build()
    schemas = document["components"]["schemas"]
    assert set(schemas["TriggerCreate"]["discriminator"]["mapping"]) == {
        "webhook", "time_scheduled", "cron_scheduled", "interval_scheduled"}
    for name in ("WebhookTriggerCreate", "CronScheduledConfig", "RetryConfig", "TriggerUpdate"):
        assert schemas[name]["additionalProperties"] is False, name
    cron = schemas["CronScheduledTriggerCreate"]
    assert set(cron["required"]) == {"name", "type", "config"}
    assert cron["properties"]["type"]["enum"] == ["cron_scheduled"]
    assert schemas["CronScheduledConfig"]["required"] == ["cron", "endpoint"]
    assert len(schemas["TriggerUpdate"]["properties"]["config"]["anyOf"]) == 4
    envelope = schemas["ErrorBody"]
    assert set(envelope["required"]) == {"code", "message", "details", "request_id"}


def test_security_is_documented_whatever_the_deployment() -> None:
    """Keys are part of the contract: the document says so even where none are set."""
    _, document = build()
    assert build(KEY)[1] == document
    schemes = document["components"]["securitySchemes"]
    assert {name: {k: v for k, v in scheme.items() if k != "description"}
            for name, scheme in schemes.items()} == {
        "bearerAuth": {"type": "http", "scheme": "bearer"},
        "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }  # fmt: skip
    assert "security" not in document  # no global requirement: /health and the docs are open
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    ingestion = ("POST", "/api/v1/webhook/{trigger_id}")
    seen = set()
    for (method, path), op in operations(document).items():
        responses = op["responses"]
        if (method, path) == ingestion:
            assert op["security"] == []  # needs no key, even where keys are set
            assert "X-Signature" in responses["401"]["description"]
            assert responses["401"]["content"]["application/json"]["schema"] == envelope
        elif path.startswith("/api/v1"):
            seen.add((method, shape(path)))
            assert op["security"] == SECURITY, (method, path)
            assert responses["401"]["content"]["application/json"]["schema"] == envelope
            assert "API key" in responses["401"]["description"], (method, path)
        else:  # /health, /metrics, the docs
            assert "security" not in op, (method, path)
            assert "401" not in responses, (method, path)
    guarded = {(m, shape(p)) for m, p in API_OPERATIONS if p.startswith("/api/v1")}
    assert seen == guarded - {("POST", shape(ingestion[1]))}


# --- against the daemon ----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def api(db_server: Any, kafka_bootstrap: str,
              tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiDaemon]:  # fmt: skip
    async with api_daemon(db_server, kafka_bootstrap, tmp_path_factory.mktemp("openapi"),
                          env={"TRIGGERD_API_KEYS": KEY},
                          headers={"Authorization": f"Bearer {KEY}"}) as running:  # fmt: skip
        yield running


async def test_the_daemon_serves_the_document_and_the_ui_without_a_key(api: ApiDaemon) -> None:
    async with Client(api.daemon.url) as anonymous:
        spec = await anonymous.get("/api/docs/swagger.json")
        assert spec.status == 200 and spec.headers["Content-Type"].startswith("application/json")
        assert set(spec.body["paths"]) == set(build(KEY)[1]["paths"])
        page = await anonymous.get("/api/docs")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        html = page.raw.decode()
        assert "//" not in html  # no CDN, no absolute URL: everything from this server
        assets = re.findall(r'(?:src|href|data-spec-url)="([^"]+)"', html)
        assert {"docs/swagger.json", "docs/static/swagger-ui-bundle.js",
                "docs/static/swagger-ui.css", "docs/static/swagger-initializer.js"} <= set(assets)
        types = {".js": "javascript", ".css": "text/css", ".json": "application/json",
                 ".png": "image/png"}  # fmt: skip
        for asset in assets:
            reply = await anonymous.get(f"/api/{asset}")
            assert reply.status == 200, asset
            assert types[Path(asset).suffix] in reply.headers["Content-Type"], asset
        bundle = (docs.STATIC_DIR / "swagger-ui-bundle.js").read_text(encoding="utf-8")
        assert "SwaggerUIBundle" in bundle and len(bundle) > 1_000_000


async def test_every_ui_file_is_served_with_its_type(api: ApiDaemon) -> None:
    async with Client(api.daemon.url) as anonymous:
        for name, media in docs.ASSETS.items():
            reply = await anonymous.get(f"{docs.STATIC_PREFIX}/{name}")
            assert reply.status == 200, name
            assert reply.raw == (docs.STATIC_DIR / name).read_bytes(), name
            assert reply.headers["Content-Type"] == media, name
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
            assert "ETag" in reply.headers and "Last-Modified" in reply.headers
            assert reply.headers["X-Request-ID"]
            etag = {"If-None-Match": reply.headers["ETag"]}
            again = await anonymous.request("GET", f"{docs.STATIC_PREFIX}/{name}", headers=etag)
            assert again.status == 304, name


@pytest.mark.parametrize("path", [
    "/api/docs/static/nope.js", "/api/docs/static/", "/api/docs/static",
    "/api/docs/static/README.txt",  # in the directory, but not one of the UI's files
    "/api/docs/static/..%2F..%2F..%2Fsetup.cfg", "/api/docs/static/%2e%2e%2fdocs.py",
    "/api/docs/static/../docs.py", "/api/docs/static/swagger-ui.css/x",
])  # fmt: skip
async def test_a_missing_ui_file_is_a_404_in_the_envelope(api: ApiDaemon, path: str) -> None:
    async with Client(api.daemon.url) as anonymous:
        reply = await anonymous.request("GET", path, headers={"X-Request-ID": "docs-404"})
    assert reply.status == 404, (path, reply.status, reply.raw[:200])
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.headers["X-Request-ID"] == "docs-404"
    assert reply.error["code"] == "not_found"


async def test_the_ui_with_a_trailing_slash_redirects_to_the_ui(api: ApiDaemon) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{api.daemon.url}/api/docs/"
        async with http.get(url, allow_redirects=False, headers={"X-Request-ID": "r1"}) as resp:
            assert resp.status == 308
            assert resp.headers["X-Request-ID"] == "r1"
            assert resp.url.join(URL(resp.headers["Location"])).path == "/api/docs"
        async with http.get(url) as followed:  # a browser lands on the page, whose relative
            assert followed.status == 200  # URLs then resolve under /api/docs/
            assert followed.url.path == "/api/docs"
            assert followed.headers["Content-Type"].startswith("text/html")



@pytest.mark.timeout(300)
async def test_schemathesis_finds_no_5xx_and_no_spec_violation(
    api: ApiDaemon, tmp_path: Path
) -> None:
    """Examples, coverage, fuzzing and the stateful phase against the live daemon (~1 min;
    bounded by the examples per operation, not a time budget, which fuzzing would fill), with
    every check but positive_data_acceptance: the document cannot say what the
    validator checks beyond JSON Schema (a valid cron, an IANA zone, a time not in the
    past, a compilable JSON Schema), so schema-valid bodies may still be a 400."""
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{api.daemon.url}/api/docs/swagger.json",
        "--url", api.daemon.url, "-H", f"Authorization: Bearer {KEY}",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        "--max-examples", "25", "--seed", "20261122", "--workers", "1",
        "--request-timeout", "10", "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path
    )
    output, _ = await proc.communicate()
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-12000:]
    tested = re.search(r"Tested: (\d+)", text)
    assert tested and int(tested.group(1)) >= 18, text[-3000:]  # every operation ran
    assert "unhandled error" not in api.daemon.logs()
