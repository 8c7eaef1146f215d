"""The console at /ui in a real browser (Debian's chromium, driven by Playwright) against a
real daemon (api, scheduler and worker roles) on MariaDB and the Kafka broker.

One daemon and one browser for the module; each test opens its own tab. The daemon runs
with API keys on, so every tab starts at the key prompt. Each page's screenshot is saved
into docs/console/ for the docs. Any JavaScript dialog (an `alert` from injected markup)
or Content-Security-Policy violation fails the test that caused it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.sink import Sink
from tests.support import Daemon, wait_until
from triggerd.api import console
from triggerd.config import Settings

try:
    from playwright import async_api as playwright_api
except ImportError:  # an old virtualenv: `make install` adds it (the test extra)
    playwright_api = None  # type: ignore[assignment]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.e2e

KEY = "console-full-key"
READ_KEY = "console-read-key"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
WIDE = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
XSS = "<img src=x onerror=alert(1)>"
AXE = Path(__file__).resolve().parent / "axe" / "axe.min.js"  # vendored: see axe/README.txt
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@dataclass
class Stack:
    daemon: Daemon
    sink: Sink
    browser: Any
    # What every tab saw that it should not have: dialogs and CSP violations.
    problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.daemon.url

    async def api(self, method: str, path: str, body: Any = None, key: str = KEY) -> Any:
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method, f"{self.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as resp,
        ):
            assert resp.status < 300, (resp.status, await resp.text())
            return await resp.json() if resp.status != 204 else None

    async def trigger(self, name: str, **config: Any) -> dict[str, Any]:
        config = {"cron": "0 3 * * *", "endpoint": self.sink.url("/hook"), **config}
        body = {"name": name, "type": "cron_scheduled", "config": config}
        return dict(await self.api("POST", "/api/v1/triggers", body))


@pytest.fixture(scope="module")
async def stack(db_server: Any, kafka_bootstrap: str,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:  # fmt: skip
    missing = [name for name, present in (("chromium", Path(CHROMIUM).exists()),
                                          ("playwright", playwright_api is not None))
               if not present]  # fmt: skip
    if missing:
        message = f"{' and '.join(missing)} not installed; run make install"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs both: missing there is a broken setup
        pytest.skip(message)
    assert playwright_api is not None
    tmp = tmp_path_factory.mktemp("console")
    keys = tmp / "keys"
    # A bare key has full access; `<name> read <key>` is a read key where scopes exist.
    keys.write_text(f"{KEY}\nviewer read {READ_KEY}\n", encoding="utf-8")
    database_url = await db_server.create_migrated()
    topic = f"jobs-{uuid.uuid4().hex[:10]}"
    env = {
        "TRIGGERD_DATABASE_URL": database_url, "TRIGGERD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TRIGGERD_KAFKA_TOPIC": topic, "TRIGGERD_KAFKA_GROUP": f"g-{topic}",
        "TRIGGERD_KAFKA_PARTITIONS": "1", "TRIGGERD_SHUTDOWN_TIMEOUT": "2s",
        "TRIGGERD_LOG_FORMAT": "json", "TRIGGERD_API_KEYS_FILE": str(keys),
    }  # fmt: skip
    if "delivery_allow_networks" in Settings.__dataclass_fields__:
        env["TRIGGERD_DELIVERY_ALLOW_NETWORKS"] = "127.0.0.0/8"  # the sink listens there
    daemon = Daemon(env, tmp).start()
    async with Sink() as sink, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                           args=BROWSER_ARGS)  # fmt: skip
        try:
            await daemon.wait_healthy()
            SHOTS.mkdir(parents=True, exist_ok=True)
            yield Stack(daemon, sink, browser)
        finally:
            await browser.close()
            daemon.kill()
            db_server.drop(database_url)


@pytest.fixture
async def tab(stack: Stack) -> AsyncIterator[Any]:
    """A fresh tab (its own sessionStorage) that has entered the full key."""
    page = await new_tab(stack, WIDE)
    await open_console(stack, page, KEY)
    yield page
    await page.context.close()
    assert stack.problems == [], stack.problems


async def new_tab(stack: Stack, viewport: dict[str, int]) -> Any:
    context = await stack.browser.new_context(viewport=viewport)
    page = await context.new_page()

    async def on_dialog(dialog: Any) -> None:
        stack.problems.append(f"dialog {dialog.type}: {dialog.message}")
        await dialog.dismiss()

    def on_console(message: Any) -> None:
        # Chromium logs every 4xx answer as a failed resource: those are expected here
        # (the key check, the access probe, routes this build lacks).
        expected = message.text.startswith("Failed to load resource")
        if "Content Security Policy" in message.text or (message.type == "error" and not expected):
            stack.problems.append(f"console {message.type}: {message.text}")

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda error: stack.problems.append(f"page error: {error}"))
    return page


async def open_console(stack: Stack, page: Any, key: str) -> None:
    await page.goto(f"{stack.url}/ui#/overview")
    dialog = page.get_by_role("dialog", name="API key needed")
    await dialog.wait_for()
    await dialog.get_by_label("API key", exact=True).fill(key)
    await dialog.get_by_role("button", name="Use this key").click()
    await page.locator("body[data-ready=true]").wait_for()


async def go(page: Any, route: str, heading: str | re.Pattern[str]) -> None:
    await page.evaluate("route => { window.location.hash = route; }", route)
    await page.get_by_role("heading", level=1, name=heading).wait_for()


async def shot(page: Any, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def accessibility_problems(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now. The script is
    evaluated over the DevTools protocol, which the page's CSP does not govern."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text(encoding="utf-8"))
    result = await page.evaluate(
        "() => axe.run(document, {resultTypes: ['violations']}).then(r => r.violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => `${v.id} (${v.impact}): ${v.nodes.map(n => n.target.join(' ')).join(', ')}`))"
    )
    return list(result)


async def poll(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 20) -> Any:
    return await wait_until(probe, timeout=timeout, interval=0.2, what=what)


# --- the page and its files ----------------------------------------------------------------


async def test_the_console_is_served_from_the_package_with_a_strict_csp(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.url}/ui") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/html")
            csp = resp.headers["Content-Security-Policy"]
            html = await resp.text()
        assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "//" not in html  # nothing from another host
        assert "<style" not in html and " style=" not in html and "<script>" not in html
        for name, media in console.ASSETS.items():
            async with http.get(f"{stack.url}/ui/static/{name}") as resp:
                assert resp.status == 200, name
                assert resp.headers["Content-Type"] == media
                assert await resp.read() == (console.CONSOLE_DIR / name).read_bytes()
        for missing in ("nope.js", "index.html", "..%2Fconsole.py"):
            async with http.get(f"{stack.url}/ui/static/{missing}") as resp:
                assert resp.status == 404, missing
                assert (await resp.json())["error"]["code"] == "not_found"
        async with http.get(f"{stack.url}/ui/", allow_redirects=False) as resp:
            assert resp.status == 308
    for name in console.ASSETS:  # untrusted text goes in as text: no markup parsing at all
        source = (console.CONSOLE_DIR / name).read_text(encoding="utf-8")
        markup = re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", source)
        assert markup is None, name


async def test_the_console_asks_for_a_key_and_shows_the_overview(stack: Stack) -> None:
    page = await new_tab(stack, WIDE)
    await page.goto(f"{stack.url}/ui")
    await page.get_by_role("dialog", name="API key needed").wait_for()
    await page.get_by_label("API key", exact=True).fill("wrong-key")
    await page.get_by_role("button", name="Use this key").click()
    await page.get_by_text("That key was not accepted").wait_for()
    assert await accessibility_problems(page) == []  # the prompt too
    await page.get_by_label("API key", exact=True).fill(KEY)
    await page.get_by_role("button", name="Use this key").click()
    await page.get_by_role("heading", name="Health", exact=True).wait_for()
    await page.get_by_role("heading", name="Last hour", exact=True).wait_for()
    assert await page.evaluate("sessionStorage.getItem('triggerd.apiKey')") == KEY
    await page.reload()  # the key stays for the tab
    await page.get_by_role("heading", name="Health", exact=True).wait_for()
    assert await page.get_by_role("dialog").count() == 0
    await page.context.close()
    assert stack.problems == []


async def test_with_a_key_kept_no_page_logs_an_error(stack: Stack) -> None:
    """Once the tab has its key, loading any page asks nothing the API refuses: not even
    a failed resource in the browser's console (no write is tried to learn the key's
    scope, the page has its icon, the new-trigger form previews nothing half typed)."""
    page = await new_tab(stack, WIDE)
    await open_console(stack, page, KEY)
    logged: list[str] = []
    page.on("console", lambda m: logged.append(m.text) if m.type == "error" else None)
    await page.reload()  # the key from the tab's storage: the start-up's own calls too
    await page.locator("body[data-ready=true]").wait_for()
    for route, heading in [("#/overview", "Overview"), ("#/triggers", "Triggers"),
                           ("#/triggers/new", "New trigger"), ("#/events", "Events"),
                           ("#/endpoints", "Endpoints"), ("#/audit", "Audit log")]:  # fmt: skip
        await page.goto(f"{stack.url}/ui{route}")
        await page.get_by_role("heading", level=1, name=heading).wait_for()
        await page.locator("body[data-ready=true]").wait_for()
    await page.goto(f"{stack.url}/ui#/triggers/new")
    await page.get_by_text("Fill in the schedule to see its next runs.").wait_for()
    # A negative: whatever the preview's 350 ms debounce would send has had its time.
    await page.wait_for_timeout(1000)
    await page.get_by_text("Fill in the schedule to see its next runs.").wait_for()
    assert logged == []
    await page.context.close()
    assert stack.problems == []


# --- the main flow ---------------------------------------------------------------------------


async def test_create_test_run_replay_and_steer_a_cron_trigger(stack: Stack, tab: Any) -> None:
    page = tab
    await go(page, "#/triggers/new", "New trigger")
    form = page.locator("form.trigger-form")
    await form.get_by_label("Name", exact=True).fill("nightly report")
    await form.get_by_label("Type").select_option("cron_scheduled")
    await form.get_by_label("Cron expression").fill("not a cron")
    await form.get_by_label("Endpoint URL").fill(stack.sink.url("/hook"))
    await form.get_by_label("Labels").fill("team=reports")
    await form.get_by_role("button", name="Create trigger").click()
    # The API's validation error, at the field it names
    cron_error = page.locator('[data-field="config.cron"] .field-error')
    await cron_error.wait_for()
    assert "cron" in (await cron_error.text_content() or "")
    assert await form.get_by_label("Cron expression").get_attribute("aria-invalid") == "true"

    await form.get_by_label("Cron expression").fill("*/5 * * * *")
    preview = page.locator(".preview-body")
    await preview.locator("ol.runs li, .unavailable").first.wait_for()
    if await preview.locator(".unavailable").count():  # a build without the preview route
        async with aiohttp.ClientSession() as http:
            url, auth = f"{stack.url}/api/v1/triggers/preview", {"X-API-Key": KEY}
            async with http.post(url, json={}, headers=auth) as resp:
                assert resp.status in (404, 405)
    else:
        assert await preview.locator("ol.runs li").count() == 5
    await shot(page, "trigger-form")
    await form.get_by_role("button", name="Create trigger").click()
    await page.get_by_role("heading", level=1, name="nightly report").wait_for()
    trigger_id = page.url.rsplit("/", 1)[1]
    saved = await stack.api("GET", f"/api/v1/triggers/{trigger_id}")
    assert saved["config"]["cron"] == "*/5 * * * *"
    assert saved["labels"] == {"team": "reports"}

    # Test run: the event appears with its attempt; then replay it
    await page.get_by_role("button", name="Test run").click()
    await page.get_by_role("link", name=re.compile("^event ")).click()
    await page.get_by_role("heading", level=1, name="Event of nightly report").wait_for()
    await page.get_by_text("Attempt 1", exact=True).wait_for(timeout=20_000)
    await page.locator(".title-row .badge", has_text=re.compile("success|failed")).wait_for()
    await page.get_by_role("button", name="Replay").click()
    await page.get_by_text("Attempt 2", exact=True).wait_for(timeout=20_000)
    await shot(page, "event")

    # Deactivate and reactivate
    await go(page, f"#/triggers/{trigger_id}", "nightly report")
    await page.get_by_role("button", name="Deactivate", exact=True).click()
    await page.get_by_role("button", name="Activate", exact=True).wait_for()
    assert (await stack.api("GET", f"/api/v1/triggers/{trigger_id}"))["status"] == "inactive"
    await page.get_by_role("button", name="Activate", exact=True).click()
    await page.get_by_role("button", name="Deactivate", exact=True).wait_for()
    assert (await stack.api("GET", f"/api/v1/triggers/{trigger_id}"))["status"] == "active"
    await page.get_by_role("heading", name="Recent events").wait_for()
    await shot(page, "trigger")


async def test_events_filter_and_refresh_by_themselves(stack: Stack, tab: Any) -> None:
    page = tab
    trigger = await stack.trigger("filtered")
    await stack.api("POST", f"/api/v1/triggers/{trigger['id']}/test")
    await go(page, "#/events", "Events")
    await page.get_by_label("Source").select_option("manual-test")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url(re.compile(r"source=manual-test"))
    rows = page.locator("table.list tbody tr")
    await rows.first.wait_for()
    sources = await page.locator('td[data-label="Source"]').all_text_contents()
    assert sources and all(s.startswith("manual-test") for s in sources)
    await shot(page, "events")

    # A new event shows up without reloading
    before = await rows.count()
    await stack.api("POST", f"/api/v1/triggers/{trigger['id']}/test")

    async def grew() -> bool:
        return bool(await rows.count() > before)

    await poll(grew, "the list to refresh by itself", timeout=15)

    await page.get_by_label("Source").select_option("scheduler")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url(re.compile(r"source=scheduler"))

    # Usually none: but the cron trigger an earlier test steered to */5 fires at every
    # fifth minute, so a run that crosses one lists its event. Either way, no other source.
    async def only_scheduled() -> bool:
        if await page.get_by_text("No events match.").is_visible():
            return True
        sources = await page.locator('td[data-label="Source"]').all_text_contents()
        return bool(sources) and all(s.startswith("scheduler") for s in sources)

    await poll(only_scheduled, "the list filtered to the scheduler's events", timeout=15)


async def test_triggers_filter_by_labels(stack: Stack, tab: Any) -> None:
    page = tab
    probe = await stack.trigger("label probe")
    if "labels" not in probe:
        pytest.skip("this build has no trigger labels")
    body = {"name": "payments nightly", "type": "cron_scheduled", "labels": {"team": "payments"},
            "config": {"cron": "0 2 * * *", "endpoint": stack.sink.url("/hook")}}  # fmt: skip
    await stack.api("POST", "/api/v1/triggers", body)
    await go(page, "#/triggers", "Triggers")
    await page.get_by_role("textbox", name="Labels").fill("team:payments")
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url(re.compile(r"label=team%3Apayments"))
    names = page.locator('td[data-label="Name"]')
    await page.get_by_role("link", name="payments nightly").wait_for()
    assert await names.all_text_contents() == ["payments nightly"]
    assert await page.locator('td[data-label="Labels"]').text_content() == "team: payments"


async def test_label_values_with_spaces_and_commas_survive_the_form_and_the_filter(
    stack: Stack, tab: Any
) -> None:
    """Label values are stored as given: an edit saved unchanged keeps them exactly (a
    line break too), and the filter finds a value holding a comma and a space."""
    page = tab
    labels = {"owner": " spaced ", "region": "eu, us", "note": "line one\nline two"}
    body = {"name": "labelled exactly", "type": "cron_scheduled", "labels": labels,
            "config": {"cron": "0 4 * * *", "endpoint": stack.sink.url("/hook")}}  # fmt: skip
    trigger = await stack.api("POST", "/api/v1/triggers", body)
    await go(page, f"#/triggers/{trigger['id']}/edit", "Edit labelled exactly")
    await page.locator("form.trigger-form").get_by_role("button", name="Save changes").click()
    # Saved: the console moves on to the trigger's page (exact: the edit page's own title,
    # "Edit labelled exactly", holds the name too).
    await page.wait_for_url(re.compile(rf"#/triggers/{trigger['id']}$"))
    await page.get_by_role("heading", level=1, name="labelled exactly", exact=True).wait_for()
    saved = await stack.api("GET", f"/api/v1/triggers/{trigger['id']}")
    assert saved["labels"] == labels

    await go(page, "#/triggers", "Triggers")
    await page.get_by_role("textbox", name="Labels").fill("region:eu, us")
    await page.get_by_role("button", name="Apply").click()
    await page.get_by_role("link", name="labelled exactly").wait_for()
    names = page.locator('td[data-label="Name"]')
    assert await names.all_text_contents() == ["labelled exactly"]


async def test_untrusted_text_is_shown_as_text_and_runs_nothing(stack: Stack, tab: Any) -> None:
    page = tab
    trigger = await stack.trigger(XSS, payload={"html": XSS})
    await stack.api("POST", f"/api/v1/triggers/{trigger['id']}/test")
    await go(page, f"#/triggers/{trigger['id']}", XSS)
    assert await page.locator("main h1").text_content() == XSS
    await go(page, "#/triggers", "Triggers")
    await page.get_by_role("link", name=XSS).first.wait_for()
    await go(page, f"#/events?trigger_id={trigger['id']}", "Events")
    await page.locator("table.list a").first.click()
    await page.get_by_role("heading", level=1, name=f"Event of {XSS}").wait_for()
    assert XSS in (await page.locator("pre.code").text_content() or "")
    assert await page.locator("main img").count() == 0
    assert stack.problems == []


async def test_delete_asks_for_a_confirmation(stack: Stack, tab: Any) -> None:
    page = tab
    trigger = await stack.trigger("to delete")
    await go(page, f"#/triggers/{trigger['id']}", "to delete")
    await page.get_by_role("button", name="Delete…").click()
    confirm = page.get_by_role("dialog", name="Delete this trigger?")
    await confirm.wait_for()
    assert await accessibility_problems(page) == []
    await confirm.get_by_role("button", name="Cancel").click()
    await confirm.wait_for(state="detached")
    await stack.api("GET", f"/api/v1/triggers/{trigger['id']}")  # still there
    await page.get_by_role("button", name="Delete…").click()
    await confirm.get_by_role("button", name="Delete trigger").click()
    await page.get_by_role("heading", level=1, name="Triggers").wait_for()
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{stack.url}/api/v1/triggers/{trigger['id']}", headers={"X-API-Key": KEY}
        ) as resp,
    ):
        assert resp.status == 404


async def test_the_main_flow_with_the_keyboard_alone(stack: Stack, tab: Any) -> None:
    page = tab
    await go(page, "#/triggers", "Triggers")

    async def tab_to(name: str, limit: int = 60) -> None:
        for _ in range(limit):
            await page.keyboard.press("Tab")
            label = await page.evaluate(
                "() => { const el = document.activeElement;"
                " return (el.labels && el.labels[0] ? el.labels[0].textContent : el.textContent)"
                " .trim(); }"
            )
            if label == name:
                return
        raise AssertionError(f"Tab never reached {name!r}")

    await tab_to("New trigger")
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", level=1, name="New trigger").wait_for()
    await tab_to("Name")
    await page.keyboard.type("typed by keyboard")
    await tab_to("Endpoint URL")
    await page.keyboard.type(stack.sink.url("/hook"))
    await tab_to("Cron expression")
    await page.keyboard.type("0 4 * * *")
    await tab_to("Create trigger")
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", level=1, name="typed by keyboard").wait_for()
    await tab_to("Deactivate")
    await page.keyboard.press("Enter")
    await page.get_by_role("button", name="Activate", exact=True).wait_for()
    assert await page.evaluate("() => document.activeElement.textContent") == "Activate"
    await page.keyboard.press("Enter")  # the focus stayed on the toggle
    await page.get_by_role("button", name="Deactivate", exact=True).wait_for()
    await tab_to("Test run")
    await page.keyboard.press("Enter")
    await page.get_by_role("link", name=re.compile("^event ")).wait_for()
    await tab_to(await page.get_by_role("link", name=re.compile("^event ")).text_content() or "")
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", level=1, name="Event of typed by keyboard").wait_for()
    focus_ring = await page.evaluate(
        "() => { const a = document.querySelector('#nav a'); a.focus();"
        " return getComputedStyle(a).outlineStyle; }"
    )
    assert focus_ring != "none"


# --- a read key -------------------------------------------------------------------------------


async def assert_read_only(stack: Stack, page: Any) -> None:
    trigger = await stack.trigger("seen by a reader")
    run = await stack.api("POST", f"/api/v1/triggers/{trigger['id']}/test")
    await page.get_by_text("read-only key").wait_for()
    await go(page, "#/triggers", "Triggers")
    assert await page.get_by_role("link", name="New trigger").count() == 0
    await go(page, f"#/triggers/{trigger['id']}", "seen by a reader")
    for name in ("Edit", "Deactivate", "Test run", "Delete…"):
        assert await page.get_by_role("button", name=name).count() == 0, name
        assert await page.get_by_role("link", name=name).count() == 0, name
    # Nothing in the place of the controls (not even the text "null").
    stray = await page.evaluate("[...document.querySelector('main').childNodes]"
                                ".filter(n => n.nodeType === 3).map(n => n.textContent)")
    assert [text for text in stray if text.strip()] == []
    await go(page, f"#/events/{run['event_id']}", "Event of seen by a reader")
    assert await page.get_by_role("button", name="Replay").count() == 0
    await go(page, f"#/triggers/{trigger['id']}/edit", "Read-only")


async def test_a_key_that_may_only_read_gets_a_read_only_console(stack: Stack) -> None:
    """The console's side alone, whatever this build's keys can do: the access route names
    a read key's scope, and every write this tab sends is answered as the API answers a
    read key (403 forbidden)."""
    page = await new_tab(stack, WIDE)

    async def as_read_key(route: Any) -> None:
        if route.request.url.endswith("/api/v1/access"):
            await route.fulfill(json={"actor": "reader", "scope": "read",
                                      "keys_required": True})  # fmt: skip
            return
        if route.request.method == "GET":
            await route.continue_()
            return
        error = {"code": "forbidden", "message": "this key may only read", "details": None,
                 "request_id": "test"}  # fmt: skip
        await route.fulfill(status=403, json={"error": error})

    await page.route(re.compile(r".*/api/v1/.*"), as_read_key)
    await open_console(stack, page, KEY)
    await assert_read_only(stack, page)
    await page.context.close()
    assert stack.problems == []


async def test_a_read_key_is_refused_writes_and_gets_a_read_only_console(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.url}/api/v1/triggers",
            json={"name": "x", "type": "webhook", "config": {}},
            headers={"Authorization": f"Bearer {READ_KEY}"},
        ) as resp,
    ):
        if resp.status == 401:
            pytest.skip("this build has no key scopes (a read key is not a key here)")
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "forbidden"
    page = await new_tab(stack, WIDE)
    await open_console(stack, page, READ_KEY)
    await assert_read_only(stack, page)
    await page.context.close()
    assert stack.problems == []


async def test_endpoints_and_their_circuits_as_the_api_describes_them(
    stack: Stack, tab: Any
) -> None:
    """The page's side, answered with the documented body: this build may not serve it yet."""
    page = tab
    endpoint = {"url": f"https://hooks.example.com/{XSS}", "state": "open",
                "consecutive_failures": 12, "last_success_at": "2026-01-01T10:00:00Z",
                "last_failure_at": "2026-01-01T11:00:00Z", "opened_at": "2026-01-01T11:00:00Z",
                "next_probe_at": "2026-01-01T11:00:30Z", "triggers": 3}  # fmt: skip
    body = {"endpoints": [endpoint], "pagination": {"current_page": 1, "page_size": 20,
                                                    "total_pages": 1, "total_records": 1}}

    async def endpoints(route: Any) -> None:
        await route.fulfill(status=200, json=body)

    await page.route(re.compile(r".*/api/v1/endpoints(\?.*)?$"), endpoints)
    await go(page, "#/endpoints", "Endpoints")
    cells = page.locator("table.list td")
    assert await page.locator('td[data-label="URL"]').text_content() == endpoint["url"]
    assert await page.locator('td[data-label="Circuit"]').text_content() == "open"
    assert await page.locator('td[data-label="Triggers"]').text_content() == "3"
    assert await cells.count() == 7
    await go(page, "#/overview", "Overview")
    await page.get_by_text(endpoint["url"]).wait_for()
    assert await page.locator("main img").count() == 0


async def test_the_key_prompt_can_be_escaped_and_opened_again(stack: Stack) -> None:
    """Escape closes the key prompt (Chromium closes a modal dialog on a second Escape
    whatever its cancel handler says): the page must then offer the prompt again rather
    than sit at "Loading…" for good."""
    page = await new_tab(stack, WIDE)
    await page.goto(f"{stack.url}/ui#/overview")
    dialog = page.get_by_role("dialog", name="API key needed")
    await dialog.wait_for()
    await page.keyboard.press("Escape")
    await page.keyboard.press("Escape")
    again = page.get_by_role("button", name="Enter API key")
    await again.wait_for()
    assert await page.locator("dialog[open]").count() == 0
    assert await page.evaluate("() => document.activeElement.textContent") == "Enter API key"
    await page.keyboard.press("Enter")
    await dialog.wait_for()
    await dialog.get_by_label("API key", exact=True).fill(KEY)
    await page.keyboard.press("Enter")
    await page.get_by_role("heading", name="Health", exact=True).wait_for()
    assert await again.count() == 0
    await page.context.close()
    assert stack.problems == []


async def test_a_call_answered_after_the_key_was_entered_does_not_ask_again(
    stack: Stack,
) -> None:
    """A page's first calls go out without a key; one whose 401 arrives after the key was
    entered is sent again with it, not a reason for a second prompt."""
    page = await new_tab(stack, WIDE)
    held: list[str] = []

    async def slow_first(route: Any) -> None:
        if route.request.method != "GET":  # as to a read key: the prompt comes from a GET
            error = {"code": "forbidden", "message": "this key may only read", "details": None,
                     "request_id": "test"}  # fmt: skip
            await route.fulfill(status=403, json={"error": error})
            return
        if not held:
            held.append(route.request.url)
            await asyncio.sleep(2)  # answered (401) after the key is in
        await route.continue_()

    await page.route(re.compile(r".*/api/v1/.*"), slow_first)
    await open_console(stack, page, KEY)
    assert held and await page.locator("dialog[open]").count() == 0
    await page.context.close()
    assert stack.problems == []


async def test_an_interval_of_a_fraction_of_a_second_is_sent_as_a_number(
    stack: Stack, tab: Any
) -> None:
    page = tab
    await go(page, "#/triggers/new", "New trigger")
    form = page.locator("form.trigger-form")
    await form.get_by_label("Name", exact=True).fill("every second and a half")
    await form.get_by_label("Type").select_option("interval_scheduled")
    await form.get_by_label("Interval (seconds)").fill("1.5")
    await form.get_by_label("Endpoint URL").fill(stack.sink.url("/hook"))
    await form.get_by_role("button", name="Create trigger").click()
    await page.get_by_role("heading", level=1, name="every second and a half").wait_for()
    created = page.url.rsplit("/", 1)[-1]
    trigger = await stack.api("GET", f"/api/v1/triggers/{created}")
    assert trigger["config"]["interval_seconds"] == 1.5
    await stack.api("DELETE", f"/api/v1/triggers/{created}")
    assert stack.problems == []


async def test_a_long_trigger_name_does_not_widen_the_edit_page(stack: Stack, tab: Any) -> None:
    page = tab
    trigger = await stack.trigger("n" * 255)  # the longest name the API takes, no spaces
    for viewport in (WIDE, PHONE):
        await page.set_viewport_size(viewport)
        await go(page, f"#/triggers/{trigger['id']}/edit", f"Edit {trigger['name']}")
        width = await page.evaluate(
            "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert width[0] <= width[1], (viewport, width)


async def test_leaving_the_events_page_while_it_loads_stops_its_refresh(
    stack: Stack, tab: Any
) -> None:
    page = tab
    lists: list[str] = []
    page.on("request", lambda request: lists.append(request.url)
            if re.search(r"/api/v1/events\?", request.url) else None)  # fmt: skip

    async def slow(route: Any) -> None:
        await asyncio.sleep(1)
        await route.continue_()

    await page.route(re.compile(r".*/api/v1/events\?.*"), slow)
    await page.evaluate("() => { window.location.hash = '#/events'; }")
    await page.wait_for_timeout(200)
    await go(page, "#/audit", "Audit log")  # left before the list answered
    await page.wait_for_timeout(1500)
    await page.unroute(re.compile(r".*/api/v1/events\?.*"))
    lists.clear()
    await page.wait_for_timeout(7000)  # two refresh periods
    assert lists == [], lists


# --- every page, wide and narrow ---------------------------------------------------------------


async def test_every_page_fits_a_laptop_and_a_phone_and_passes_axe(stack: Stack, tab: Any) -> None:
    page = tab
    long_name = "a trigger with a rather long name to see how it wraps on a phone"
    trigger = await stack.trigger(long_name, payload={"order": 42})
    run = await stack.api("POST", f"/api/v1/triggers/{trigger['id']}/test")
    pages = [
        ("overview", "#/overview", "Overview"),
        ("triggers", "#/triggers", "Triggers"),
        ("trigger-form", "#/triggers/new", "New trigger"),
        ("trigger", f"#/triggers/{trigger['id']}", trigger["name"]),
        ("events", "#/events", "Events"),
        ("event", f"#/events/{run['event_id']}", re.compile("^Event of")),
        ("endpoints", "#/endpoints", "Endpoints"),
        ("audit", "#/audit", "Audit log"),
    ]
    for viewport in (WIDE, PHONE):
        await page.set_viewport_size(viewport)
        for name, route, heading in pages:
            await go(page, route, heading)
            await page.wait_for_load_state("networkidle")
            width = await page.evaluate(
                "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert width[0] <= width[1], (name, viewport, width)
            assert await accessibility_problems(page) == [], (name, viewport)
            if viewport is PHONE and name in ("triggers", "trigger", "event"):
                await shot(page, f"{name}-phone")
            elif viewport is WIDE and name in ("overview", "triggers", "endpoints", "audit"):
                await shot(page, name)
