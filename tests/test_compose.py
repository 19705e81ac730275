"""docker-compose.yml, docker/Dockerfile and dashboard/wsgi.py, checked by reading them.

No Docker engine is needed: the compose file is parsed with PyYAML, its environment is fed
to the app's own ``load_settings``, and the Dockerfile's build arguments are followed to the
``pip install`` line they end up in.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
GPU_WORKER, CPU_WORKER = "worker", "worker-cpu"
WORKERS = (GPU_WORKER, CPU_WORKER)
LAB_SERVICES = ("web", *WORKERS)
APP_VARIABLES = ("REDIS_URL", "DATABASE_URL", "LAB_DATA_DIR", "LAB_MODELS_DIR")
TF_EXTRAS = {"cpu", "gpu"}

# ${VAR}, ${VAR:-default}, ${VAR-default}; $$ is a literal dollar.
_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def interpolate(value: str) -> str:
    """A compose value as it reads when none of its variables is set: defaults, else ''."""
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return match.group(2) or ""

    return _INTERPOLATION.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE.is_file(), "docker-compose.yml is missing"
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or KEY=VALUE list), interpolated with defaults."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: interpolate("" if value is None else str(value)) for key, value in raw.items()}


def volume_mounts(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Named-volume mounts as {source, target, read_only} (short and long syntax)."""
    mounts = []
    for item in service.get("volumes") or []:
        if isinstance(item, str):
            parts = interpolate(item).split(":")
            if len(parts) < 2:
                continue  # an anonymous volume
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
            kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
        else:
            source, target = item.get("source", ""), item["target"]
            read_only = bool(item.get("read_only"))
            kind = item.get("type", "volume")
        if kind == "volume" and source:
            mounts.append({"source": source, "target": target, "read_only": read_only})
    return mounts


def mount_holding(service: dict[str, Any], path: Path | str) -> dict[str, Any] | None:
    """The named-volume mount whose target contains ``path`` (the deepest one)."""
    path = PurePosixPath(str(path))
    found = [m for m in volume_mounts(service)
             if path == PurePosixPath(m["target"]) or PurePosixPath(m["target"]) in path.parents]
    return max(found, key=lambda m: len(m["target"]), default=None)


def settings_of(service: dict[str, Any]) -> Settings:
    return load_settings(environment(service))


def sqlite_file(settings: Settings) -> PurePosixPath:
    assert settings.database_url.startswith("sqlite:///"), settings.database_url
    return PurePosixPath(settings.database_url.removeprefix("sqlite:///"))


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    return command.split() if isinstance(command, str) else [str(word) for word in command]


def reserved_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = (((service.get("deploy") or {}).get("resources") or {})
                    .get("reservations") or {})
    return reservations.get("devices") or []


def active_services(services: dict[str, dict[str, Any]], profile: str | None) -> set[str]:
    """The services ``docker compose [--profile P] up`` starts."""
    return {name for name, svc in services.items()
            if not svc.get("profiles") or profile in svc["profiles"]}


def is_worker(service: dict[str, Any]) -> bool:
    words = command_words(service) if service.get("command") else []
    return "celery" in words and "worker" in words


# --- services, health and profiles -------------------------------------------------------------


def test_services_exist(services):
    assert {"redis", *LAB_SERVICES} <= set(services)


def test_redis_is_healthchecked_and_persistent(services):
    redis = services["redis"]
    assert redis["image"].split(":")[0] in ("redis", "docker.io/library/redis")
    test = redis["healthcheck"]["test"]
    test = " ".join(test) if isinstance(test, list) else test
    assert "redis-cli" in test and "ping" in test
    command = command_words(redis)
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"
    assert mount_holding(redis, "/data"), "redis's /data (the append-only file) needs a volume"


@pytest.mark.parametrize("name", LAB_SERVICES)
def test_lab_services_wait_for_a_healthy_redis(services, name):
    depends_on = services[name].get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form (conditions)"
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_web_is_healthchecked_on_api_health(services):
    test = services["web"]["healthcheck"]["test"]
    assert "/api/health" in (" ".join(test) if isinstance(test, list) else test)


def test_gpu_worker_reserves_an_nvidia_gpu(services):
    devices = reserved_devices(services[GPU_WORKER])
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               and (d.get("count") in (1, "all") or d.get("device_ids")) for d in devices)


def test_cpu_profile_starts_a_worker_without_gpu(services):
    started = active_services(services, "cpu")
    assert CPU_WORKER in started and GPU_WORKER not in started
    assert not reserved_devices(services[CPU_WORKER])
    for name in started:  # nothing that starts on a CPU-only machine asks for a GPU
        assert not reserved_devices(services[name]), name
    assert [n for n in started if is_worker(services[n])] == [CPU_WORKER]


def test_gpu_profile_starts_the_gpu_worker_only(services):
    started = active_services(services, "gpu")
    assert [n for n in started if is_worker(services[n])] == [GPU_WORKER]
    assert {"redis", "web"} <= started


def test_header_documents_both_commands():
    header = COMPOSE.read_text().split("\nservices:")[0]
    assert "docker compose --profile gpu up" in header
    assert "docker compose --profile cpu up" in header


# --- volumes -----------------------------------------------------------------------------------


def test_every_named_volume_is_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    assert {"data", "models", "state"} <= declared
    for name, svc in services.items():
        for mount in volume_mounts(svc):
            assert mount["source"] in declared, f"{name}: volume {mount['source']} undeclared"


def test_web_and_workers_mount_the_same_models_and_state(services):
    for kind in ("models", "state"):
        mounts = {}
        for name in LAB_SERVICES:
            settings = settings_of(services[name])
            path = settings.models_dir if kind == "models" else sqlite_file(settings)
            mount = mount_holding(services[name], path)
            assert mount and mount["source"] == kind, f"{name}: {path} is not on {kind}"
            assert not mount["read_only"], f"{name} writes {kind}"
            mounts[name] = (mount["source"], mount["target"])
        assert len(set(mounts.values())) == 1, mounts


def test_data_volume_is_writable_for_workers(services):
    for name in LAB_SERVICES:
        mount = mount_holding(services[name], settings_of(services[name]).data_dir)
        assert mount and mount["source"] == "data", name
        if name in WORKERS:  # a worker may download the dataset into LAB_DATA_DIR
            assert not mount["read_only"], name


# --- ports and environment ---------------------------------------------------------------------


def test_web_publishes_5000_defaulting_to_lab_port(services):
    ports = services["web"]["ports"]
    short = [p for p in ports if isinstance(p, str)]
    assert any(re.fullmatch(r"\$\{LAB_PORT:-5000\}:5000(/tcp)?", p) for p in short), ports
    assert any(interpolate(p).split(":")[-2:] == ["5000", "5000"] for p in short)


@pytest.mark.parametrize("name", LAB_SERVICES)
def test_environment_uses_the_settings_variables(services, name):
    env = environment(services[name])
    assert set(APP_VARIABLES) <= set(env), sorted(set(APP_VARIABLES) - set(env))
    settings, defaults = load_settings(env), load_settings({})
    # Each variable reached its field (a misspelt name would leave the local default).
    for field in ("redis_url", "database_url", "data_dir", "models_dir"):
        assert getattr(settings, field) != getattr(defaults, field), field
    redis = urlparse(settings.redis_url)
    assert (redis.scheme, redis.hostname, redis.port or 6379) == ("redis", "redis", 6379)


def test_every_lab_variable_is_one_the_code_reads(services):
    source = "\n".join(p.read_text() for pkg in ("ml", "core", "worker", "dashboard")
                       for p in (ROOT / pkg).rglob("*.py"))
    for name in LAB_SERVICES:
        for key in environment(services[name]):
            if key.startswith("LAB_") or key in APP_VARIABLES:
                assert f'"{key}"' in source, f"{name}: nothing reads {key}"


def test_web_takes_the_passcode_and_cap_from_the_host(services):
    web = environment(services["web"])
    assert {"LAB_PASSCODE", "LAB_MAX_QUEUED_PER_CLIENT", "LAB_SECRET_KEY"} <= set(web)
    settings = load_settings(web)
    assert settings.passcode is None and settings.max_active_per_client == 3  # open, capped
    assert str(settings.state_dir) == "/var/lib/lab"  # the session key lands on a volume


def test_web_and_workers_agree(services):
    settings = {name: settings_of(services[name]) for name in LAB_SERVICES}
    fields = {name: (s.redis_url, s.database_url, s.data_dir, s.models_dir)
              for name, s in settings.items()}
    assert len(set(fields.values())) == 1, fields
    assert urlparse(settings["web"].redis_url).hostname in services
    assert environment(services["web"]).get("LAB_HOST") == "0.0.0.0"


# --- images ------------------------------------------------------------------------------------


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    steps, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        instruction, _, args = full.partition(" ")
        steps.append((instruction.upper(), args.strip()))
    return steps


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (ins, _) in enumerate(steps) if ins == "FROM")
    return steps[last_from:]


def installed_extras(dockerfile: Path, build_args: dict[str, str]) -> set[str]:
    """The extras of the project's ``pip install ".[...]"`` in the final stage."""
    stage = final_stage(parse_dockerfile(dockerfile))
    args: dict[str, str] = {}
    for instruction, text in stage:
        if instruction == "ARG":
            name, _, default = text.partition("=")
            args[name] = build_args.get(name, default.strip("\"'"))
    extras: set[str] = set()
    for instruction, text in stage:
        if instruction != "RUN" or "pip install" not in text:
            continue
        for match in re.finditer(r"""["']?\.\[([^\]]+)\]["']?""", text):
            expanded = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                              lambda m: args.get(m.group(1) or m.group(2), "<unset>"),
                              match.group(1))
            extras |= {e.strip() for e in expanded.split(",")}
    return extras


def build_of(service: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    build = service["build"]
    build = {"context": build} if isinstance(build, str) else build
    context = ROOT / build.get("context", ".")
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    raw = build.get("args") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return dockerfile, {key: str(value) for key, value in raw.items()}


@pytest.mark.parametrize("name", LAB_SERVICES)
def test_images_install_the_right_tensorflow(services, name):
    dockerfile, build_args = build_of(services[name])
    assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
    declared = {text.partition("=")[0] for ins, text in final_stage(parse_dockerfile(dockerfile))
                if ins == "ARG"}
    assert set(build_args) <= declared, f"{name}: build args the Dockerfile ignores"
    extras = installed_extras(dockerfile, build_args)
    expected = "gpu" if name == GPU_WORKER else "cpu"
    assert extras & TF_EXTRAS == {expected}, f"{name} installs {sorted(extras)}"


def test_dockerfile_defaults_to_cpu_and_runs_from_source():
    dockerfile = ROOT / "docker" / "Dockerfile"
    steps = parse_dockerfile(dockerfile)
    assert installed_extras(dockerfile, {}) & TF_EXTRAS == {"cpu"}
    stage = final_stage(steps)
    assert stage[0][1].startswith("python:3.11-slim")
    env = " ".join(text for ins, text in stage if ins == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    users = [text for ins, text in stage if ins == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    # The code and node_modules sit side by side as in a checkout: core/settings.py's ROOT
    # is the folder above worker/, and the app serves ROOT/node_modules/socket.io-client.
    workdir = PurePosixPath("/")
    copied = set()
    for ins, text in stage:
        if ins == "WORKDIR":
            workdir = workdir / text
        elif ins == "COPY":
            words = [w for w in text.split() if not w.startswith("--")]
            copied.add(workdir / words[-1])
    for part in ("ml", "core", "worker", "dashboard", "launcher", "templates", "static",
                 "node_modules"):
        assert workdir / part in copied, f"{part} is not copied into {workdir}"
    node_copy = [text for ins, text in stage if ins == "COPY" and "node_modules" in text]
    assert node_copy and "--from=" in node_copy[0]
    builder = node_copy[0].split("--from=")[1].split()[0]
    start = next(i for i, (ins, text) in enumerate(steps)
                 if ins == "FROM" and text.split()[-2:] == ["AS", builder])
    end = next(i for i, (ins, _) in enumerate(steps) if i > start and ins == "FROM")
    assert any(ins == "RUN" and "npm ci" in text for ins, text in steps[start:end])
    assert (ROOT / "package-lock.json").is_file()


def test_dockerignore_keeps_local_state_out():
    entries = {line.strip().strip("/") for line in (ROOT / ".dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", "node_modules", "models", "lab-data", "bench/out", "tests/artifacts",
            ".git", "*.egg-info"} <= entries
    assert any("__pycache__" in e for e in entries)


# --- commands ----------------------------------------------------------------------------------


def test_web_runs_one_gunicorn_process(services):
    words = command_words(services["web"])
    assert words[0] == "gunicorn" and words[-1] == "dashboard.wsgi:app"
    workers = next(words[i + 1] for i, w in enumerate(words) if w in ("-w", "--workers"))
    assert workers == "1"  # Socket.IO sessions live in one process
    assert "--threads" in words and "0.0.0.0:5000" in words
    assert "--preload" not in words  # create_app's threads would not survive the fork


@pytest.mark.parametrize(("name", "prefix"), [(GPU_WORKER, "gpu@"), (CPU_WORKER, "cpu@")])
def test_worker_command_and_grace_period(services, name, prefix):
    words = command_words(services[name])
    assert words[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert words[words.index("--concurrency") + 1] == "1"
    assert words[words.index("-n") + 1] == prefix + "%h"
    grace = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(services[name]["stop_grace_period"]))
    assert grace and int(grace.group(1) or 0) * 60 + int(grace.group(2) or 0) >= 60


def test_wsgi_builds_the_app_without_tensorflow(tmp_path):
    script = ("import sys\n"
              "from flask import Flask\n"
              "import dashboard.wsgi as wsgi\n"
              "assert isinstance(wsgi.app, Flask), type(wsgi.app)\n"
              "assert 'tensorflow' not in sys.modules, 'TensorFlow imported at start-up'\n")
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:9/0",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "x.db").is_file()
