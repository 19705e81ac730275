"""docker-compose.yml, docker/*, the Makefile's compose-check and dashboard/wsgi.py, checked by
reading them.

No Docker engine is needed: the compose file is parsed with PyYAML, its environment is fed
to the app's own ``load_settings``, and the Dockerfile's build arguments are followed to the
``pip install`` line they end up in. `make compose-check` (docker/compose_check.py) runs the
stack for real where Docker is installed.
"""

from __future__ import annotations

import ast
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
from testkit.paths import ROOT

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
REDIS_DOCKERFILE = ROOT / "docker" / "redis.Dockerfile"
CA_OVERRIDE = ROOT / "docker" / "compose.ca.yml"
CHECK_SCRIPT = ROOT / "docker" / "compose_check.py"
GPU_WORKER, CPU_WORKER = "worker", "worker-cpu"
WORKERS = (GPU_WORKER, CPU_WORKER)
LAB_SERVICES = ("web", *WORKERS)
APP_VARIABLES = ("REDIS_URL", "DATABASE_URL", "LAB_DATA_DIR", "LAB_MODELS_DIR")
TF_EXTRAS = {"cpu", "gpu"}
BASE_IMAGE = "debian:bookworm-slim"
IMAGE = "kitten-and-puppy-lab"
# What docker-compose 1.29 (the one Debian 12 ships) accepts: its schema refuses anything else,
# e.g. a top-level `name:` or build secrets.
COMPOSE_129_TOP_LEVEL = {"version", "services", "volumes", "networks", "secrets", "configs"}
COMPOSE_129_BUILD = {"context", "dockerfile", "args", "labels", "cache_from", "network",
                     "target", "shm_size", "extra_hosts", "isolation"}
CA_VARIABLES = {"PIP_CERT", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE",
                "CURL_CA_BUNDLE", "NPM_CONFIG_CAFILE"}

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


def seconds(duration: Any) -> int:
    """A compose duration (1m30s, 20s, 2m) in seconds."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(duration))
    assert match and match.group(0), duration
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


# --- services, health and profiles -------------------------------------------------------------


def test_services_exist(services):
    assert {"redis", *LAB_SERVICES} <= set(services)


def test_redis_is_healthchecked_and_persistent(services):
    redis = services["redis"]
    test = redis["healthcheck"]["test"]
    test = " ".join(test) if isinstance(test, list) else test
    assert "redis-cli" in test and "ping" in test
    command = command_words(redis)
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"
    assert mount_holding(redis, "/data"), "redis's /data (the append-only file) needs a volume"


def test_redis_is_debians_redis_server_on_the_lab_base(services):
    """No redis image from a registry: Debian's redis-server on the lab's own base."""
    redis = services["redis"]
    dockerfile, _ = build_of(redis)
    assert dockerfile == REDIS_DOCKERFILE
    assert interpolate(redis["image"]) == f"{IMAGE}:redis"
    steps = parse_dockerfile(dockerfile)
    assert global_args(steps).get("BASE") == global_args(parse_dockerfile(DOCKERFILE))["BASE"]
    assert [text for ins, text in steps if ins == "FROM"] == ["${BASE}"]
    assert any(ins == "RUN" and "apt-get install" in text and "redis-server" in text
               for ins, text in steps)
    users = [text for ins, text in steps if ins == "USER"]
    assert users and users[-1] not in ("root", "0")
    # Without a config file redis-server's protected mode refuses the other containers; it is
    # turned off only because the port is never published.
    words = command_words(redis)
    assert words[words.index("--protected-mode") + 1] == "no"
    assert words[words.index("--dir") + 1] == "/data" and mount_holding(redis, "/data")
    assert not redis.get("ports")


@pytest.mark.parametrize("name", LAB_SERVICES)
def test_lab_services_wait_for_a_healthy_redis(services, name):
    depends_on = services[name].get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form (conditions)"
    assert depends_on["redis"]["condition"] == "service_healthy"


def test_web_is_healthchecked_on_api_health(services):
    test = services["web"]["healthcheck"]["test"]
    assert "/api/health" in (" ".join(test) if isinstance(test, list) else test)


@pytest.mark.parametrize("name", WORKERS)
def test_workers_are_healthy_while_they_announce_themselves(services, name):
    """The healthcheck looks for the key the worker renews in redis (worker/celery_app.py),
    named <prefix>@<container hostname> after the worker's -n <prefix>@%h."""
    prefix = re.search(r'^PRESENCE_PREFIX = "([^"]+)"',
                       (ROOT / "worker" / "celery_app.py").read_text(), re.M).group(1)
    test = services[name]["healthcheck"]["test"]
    assert test[0] == "CMD"
    script = test[-1]
    assert f"'{prefix}*@' + socket.gethostname()" in script and "REDIS_URL" in script
    words = command_words(services[name])
    assert words[words.index("-n") + 1].endswith("@%h")
    ast.parse(script)  # valid Python


@pytest.mark.parametrize("name", ("redis", *LAB_SERVICES))
def test_signals_reach_the_service(services, name):
    """docker-init as PID 1 and an exec-form command: `docker compose stop`'s SIGTERM
    reaches the program itself, not a shell that would ignore it until the SIGKILL."""
    service = services[name]
    assert service.get("init") is True, f"{name}: init: true"
    assert isinstance(service["command"], list), f"{name}: exec-form command"


def test_web_stops_before_its_grace_period_ends(services):
    web = services["web"]
    words = command_words(web)
    graceful = int(words[words.index("--graceful-timeout") + 1])
    assert graceful + 5 <= seconds(web["stop_grace_period"])


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
    assert "docker-compose --profile cpu up" in header  # the 1.29 spelling
    assert "make compose-check" in header


def test_docker_compose_1_29_reads_the_file(compose, services):
    """The file works with the compose plugin and with docker-compose 1.29, whose schema
    refuses newer keys: a top-level `name:` (the project is named with -p or
    COMPOSE_PROJECT_NAME instead), build secrets or additional contexts."""
    extra = {key for key in compose if not key.startswith("x-")} - COMPOSE_129_TOP_LEVEL
    assert not extra, f"docker-compose 1.29 refuses {sorted(extra)}"
    for name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict):
            keys = {key for key in build if not key.startswith("x-")}
            assert keys <= COMPOSE_129_BUILD, f"{name}: {sorted(keys - COMPOSE_129_BUILD)}"


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
    # LAB_BIND=127.0.0.1 publishes it on this machine only (as make compose-check does).
    assert any(re.fullmatch(r"(\$\{LAB_BIND:-0\.0\.0\.0\}:)?\$\{LAB_PORT:-5000\}:5000(/tcp)?", p)
               for p in short), ports
    assert any(interpolate(p).split(":")[-2:] == ["5000", "5000"] for p in short)
    assert all(interpolate(p).split(":")[0] in ("0.0.0.0", "5000") for p in short)


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
    assert {"LAB_PASSCODE", "LAB_MAX_RUNS_PER_STUDENT", "LAB_SECRET_KEY"} <= set(web)
    settings = load_settings(web)
    assert settings.passcode is None and settings.max_runs_per_owner == 2  # open, capped
    assert settings.max_active_per_address == 0  # no per-address cap unless asked for
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


def global_args(steps: list[tuple[str, str]]) -> dict[str, str]:
    """The ARGs before the first FROM (those a FROM line may use), with their defaults."""
    found = {}
    for instruction, text in steps:
        if instruction == "FROM":
            break
        if instruction == "ARG":
            name, _, default = text.partition("=")
            found[name] = default.strip("\"'")
    return found


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
    steps = parse_dockerfile(dockerfile)
    declared = {text.partition("=")[0] for ins, text in final_stage(steps) if ins == "ARG"}
    assert set(build_args) <= declared | set(global_args(steps)), \
        f"{name}: build args the Dockerfile ignores"
    extras = installed_extras(dockerfile, build_args)
    expected = "gpu" if name == GPU_WORKER else "cpu"
    assert extras & TF_EXTRAS == {expected}, f"{name} installs {sorted(extras)}"
    # Tagged for what it holds: web and worker-cpu share the :cpu image.
    assert interpolate(services[name]["image"]) == f"{IMAGE}:{expected}"
    assert re.fullmatch(r"\$\{LAB_IMAGE:-" + IMAGE + r"\}:" + expected, services[name]["image"])


def test_images_build_from_plain_debian():
    """Every stage starts from BASE (debian:bookworm-slim): Debian's Python 3.11 in a venv for
    the lab, Debian's nodejs and npm for the assets. No other registry image, and no
    `# syntax=` line, which would make BuildKit pull a frontend image."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    steps = parse_dockerfile(DOCKERFILE)
    assert global_args(steps) == {"BASE": BASE_IMAGE}
    froms = [text.split() for ins, text in steps if ins == "FROM"]
    assert froms and all(words[0] == "${BASE}" for words in froms), froms
    stage = final_stage(steps)
    apt = " ".join(text for ins, text in stage if ins == "RUN" and "apt-get install" in text)
    assert {"python3", "python3-venv", "ca-certificates"} <= set(apt.split())
    env = " ".join(text for ins, text in stage if ins == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env
    assert any(ins == "RUN" and "python3 -m venv /opt/venv" in text for ins, text in stage)
    assets = steps[:next(i for i, (ins, _) in enumerate(steps) if (ins, _) == stage[0])]
    apt = " ".join(text for ins, text in assets if ins == "RUN" and "apt-get install" in text)
    assert {"nodejs", "npm"} <= set(apt.split())


def test_ca_reaches_pip_and_npm_only_as_a_build_secret():
    """Behind a proxy that re-signs TLS, pip and npm get its CA as the BuildKit secret `ca`:
    mounted for the steps that fetch packages, in no layer, variable or file of the image."""
    steps = parse_dockerfile(DOCKERFILE)
    fetching = [text for ins, text in steps
                if ins == "RUN" and ("pip install" in text or "npm ci" in text)]
    assert len(fetching) == 2
    for text in fetching:
        assert text.startswith("--mount=type=secret,id=ca "), text[:80]
        # Optional: a build without the secret works as before.
        assert "required=true" not in text and "if [ -s /run/secrets/ca ]" in text
    pip = next(text for text in fetching if "pip install" in text)
    copied = re.search(r"> (\S+)", pip).group(1)  # Debian's CAs + the secret, for pip
    assert copied.startswith("/tmp/") and re.search(r"rm -rf[^&]*" + re.escape(copied), pip)
    for ins, text in steps:
        if ins in ("ENV", "ARG"):
            assert not CA_VARIABLES & set(re.findall(r"(\w+)=", text)), text
        if ins in ("COPY", "ADD"):
            assert not re.search(r"\.(crt|pem)\b|/run/secrets|ca-cert", text), text
    # The compose plugin's way to hand it over (docker-compose 1.29 has no build secrets).
    override = yaml.safe_load(CA_OVERRIDE.read_text())
    assert set(override["secrets"]) == {"ca"}
    assert interpolate(override["secrets"]["ca"]["file"]) == "/etc/ssl/certs/ca-certificates.crt"
    assert "${LAB_CA_BUNDLE" in override["secrets"]["ca"]["file"]
    assert {name: svc["build"]["secrets"] for name, svc in override["services"].items()} == \
        {name: ["ca"] for name in LAB_SERVICES}


def test_dockerfile_owns_the_volume_folders_to_its_user(services):
    """Docker gives a new named volume the owner of the folder it is mounted on: each folder
    a lab service mounts a volume on is made and chowned to the image's user."""
    stage = final_stage(parse_dockerfile(DOCKERFILE))
    user = [text for ins, text in stage if ins == "USER"][-1]
    chowned = set()
    for ins, text in stage:
        if ins == "RUN":
            for match in re.finditer(r"chown (?:-R )?(\w+):(\w+) ([^&;]+)", text):
                if match.group(1) == user:
                    chowned |= set(match.group(3).split())
    for name in LAB_SERVICES:
        for mount in volume_mounts(services[name]):
            assert mount["target"] in chowned, f"{name}: {mount['target']} is not {user}'s"


def test_dockerfile_defaults_to_cpu_and_runs_from_source():
    dockerfile = DOCKERFILE
    steps = parse_dockerfile(dockerfile)
    assert installed_extras(dockerfile, {}) & TF_EXTRAS == {"cpu"}
    stage = final_stage(steps)
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
    assert seconds(services[name]["stop_grace_period"]) >= 60


def test_wsgi_builds_the_app_without_tensorflow(tmp_path):
    script = ("import sys\n"
              "from flask import Flask\n"
              "import dashboard.wsgi as wsgi\n"
              "assert isinstance(wsgi.app, Flask), type(wsgi.app)\n"
              "assert 'tensorflow' not in sys.modules, 'TensorFlow imported at start-up'\n")
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:9/0",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
           "LAB_STATE_DIR": str(tmp_path)}  # the session key, not into the checkout
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "x.db").is_file()


# --- make compose-check ------------------------------------------------------------------------


def make_rule(target: str) -> tuple[str, list[str]]:
    """A Makefile target's prerequisites and recipe lines."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:(.*)\n((?:\t.*\n)*)", text, re.M)
    assert match, f"no {target} target"
    return match.group(1), [line.strip() for line in match.group(2).splitlines()]


def test_compose_check_is_its_own_make_target():
    prerequisites, recipe = make_rule("compose-check")
    assert any("docker/compose_check.py" in line for line in recipe)
    assert "install" not in prerequisites  # python3 and Docker, no venv
    test_prerequisites, test_recipe = make_rule("test")
    assert "compose-check" not in test_prerequisites + " ".join(test_recipe)
    assert "make compose-check" in (ROOT / "Makefile").read_text().split("\ninstall:")[0]


def test_compose_check_needs_only_the_standard_library():
    tree = ast.parse(CHECK_SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported


def test_compose_check_agrees_with_the_files(services):
    """The check's idea of the stack is the compose file's."""
    tree = ast.parse(CHECK_SCRIPT.read_text())
    consts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            for target in node.targets:
                if isinstance(target, ast.Name):
                    consts[target.id] = value
                elif isinstance(target, ast.Tuple):
                    for name, item in zip(target.elts, value, strict=True):
                        consts[name.id] = item
    assert set(consts["SERVICES"]) == active_services(services, "cpu")
    assert consts["WORKER"] == CPU_WORKER
    assert consts["GRACE_S"] == seconds(services[CPU_WORKER]["stop_grace_period"])
    assert consts["PROJECT"] != ROOT.name and consts["IMAGE"] != IMAGE  # not the user's lab
    assert consts["TINY"] == {"image_size": 32, "batch_size": 8, "augment": False,
                              "learning_rate": 0.01, "epochs": 1}
    bases = {global_args(parse_dockerfile(f))["BASE"] for f in (DOCKERFILE, REDIS_DOCKERFILE)}
    assert bases == {BASE_IMAGE}
