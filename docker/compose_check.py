"""The Docker Compose stack for real: build, start, train, predict, restart, tear down.

    make compose-check                      (python3 docker/compose_check.py)
    python3 docker/compose_check.py [--keep-images] [--keep-engine] [--build-gpu]
                                   [--ca-bundle FILE | --no-ca] [--keep-stack-on-failure]

Long (minutes: the first build downloads TensorFlow), so it is not part of `make test`, whose
tests/test_compose.py only reads the files. It needs a Docker engine and either the compose
plugin (`docker compose`) or docker-compose 1.29, and nothing but Python's standard library.

Each step is logged with its time; a table of the steps and the total wall time close the run.
Exit status 0 only when every step passed.

  engine    `docker info` answers; when nothing does, it starts dockerd (as root) and says so,
            and stops it again at the end (unless --keep-engine)
  base      the base image the Dockerfiles name (ARG BASE, debian:bookworm-slim): used when
            present, else pulled, else (no registry) a local stand-in is made with debootstrap
            from this machine's Debian mirror and `docker import`ed under that name
  build     kitten-and-puppy-lab-check:cpu (TF_EXTRA=cpu) and :redis with BuildKit; the CA
            bundle (--ca-bundle; default $LAB_CA_BUNDLE, else the system's) is handed to pip
            and npm as the build secret `ca`, as behind a proxy that re-signs TLS
  image     the image runs as a non-root user, has no CA variable in its config, and none of
            the bundle's certificates that the image does not ship itself (Debian's
            ca-certificates, certifi) is anywhere in its file system (exported and scanned)
  up        compose --profile cpu up -d; every healthcheck healthy
  stack     PID 1 is docker-init, the services run as `lab`, the volumes are the user's, the
            SQLite run store is at the Alembic head revision
  data      48 synthetic photos (24 a class, 40 px; testkit/synthetic.py) copied into
            the data volume the way docker-compose.yml's header says
  train     POST /api/runs (32 px, 1 epoch) succeeds; model.keras in the models volume
  predict   POST /api/predict with a photo and that model
  shutdown  a long run training; `compose stop`: the worker's warm shutdown ends it
            cancelled and the worker exits by itself, well within its stop_grace_period
  restart   `compose down` (volumes kept) and `up -d`: the runs, their events and the model
            are still there, the shut-down run is cancelled, and predicting works again
  teardown  `compose down -v`: no container, network or volume of the project left; the
            images it built, pulled or stood in removed, and the build cache it made pruned
            (all kept with --keep-images)

The compose project is its own (kplab-check), its images are tagged
kitten-and-puppy-lab-check:* (LAB_IMAGE), and the web is published on a free port of
127.0.0.1 only (LAB_BIND): a lab of yours on the same engine is left alone. The HTTP traffic
goes to that loopback port only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "compose-check"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
REDIS_DOCKERFILE = ROOT / "docker" / "redis.Dockerfile"
SYNTHETIC = ROOT / "testkit" / "synthetic.py"
PROJECT = "kplab-check"
IMAGE = "kitten-and-puppy-lab-check"
SERVICES = ("redis", "web", "worker-cpu")
WORKER = "worker-cpu"
PER_CLASS, PHOTO_PX = 24, 40
TINY = {"image_size": 32, "batch_size": 8, "augment": False, "learning_rate": 0.01, "epochs": 1}
# Trains until stopped: the warm shutdown has a run to end.
ENDLESS = {**TINY, "epochs": 300, "early_stopping_patience": 100, "lr_patience": 100}
GRACE_S = 120  # docker-compose.yml's stop_grace_period for the workers (2m)
CA_VARIABLES = ("PIP_CERT", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE",
                "CURL_CA_BUNDLE", "NPM_CONFIG_CAFILE")

log = logging.getLogger("bench.compose_check")


class CheckFailed(Exception):
    """A step found something wrong; the message says what."""


def fail(message: str) -> None:
    raise CheckFailed(message)


class ElapsedFormatter(logging.Formatter):
    """Each line starts with the seconds since the check began."""

    def __init__(self, start: float):
        super().__init__("%(message)s")
        self.start = start

    def format(self, record: logging.LogRecord) -> str:
        return f"[{record.created - self.start:7.1f} s] {super().format(record)}"


# --- running commands -------------------------------------------------------------------------


def sh(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
       check: bool = True, stdin: bytes | None = None, log_to: Path | None = None,
       what: str | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd``; its output captured (or written to ``log_to``). Raises CheckFailed when
    it fails and ``check``, with the end of its output."""
    log.debug("$ %s", " ".join(cmd))
    try:
        if log_to is not None:
            log_to.parent.mkdir(parents=True, exist_ok=True)
            with log_to.open("ab") as out:
                out.write(f"\n$ {' '.join(cmd)}\n".encode())
                out.flush()
                done = subprocess.run(cmd, env=env, timeout=timeout, input=stdin,
                                      stdout=out, stderr=subprocess.STDOUT)
            done.stdout = b""
        else:
            done = subprocess.run(cmd, env=env, timeout=timeout, input=stdin,
                                  capture_output=True)
    except subprocess.TimeoutExpired:
        fail(f"{what or cmd[0]}: still running after {timeout:.0f} s: {' '.join(cmd)}")
    except FileNotFoundError:
        fail(f"{cmd[0]} is not installed")
    if check and done.returncode != 0:
        if log_to is not None:
            tail = "\n".join(log_to.read_text(errors="replace").splitlines()[-40:])
            where = f" (whole log: {log_to})"
        else:
            tail = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
            where = ""
        fail(f"{what or ' '.join(cmd[:3])} failed (exit {done.returncode}){where}:\n{tail}")
    return done


def out(done: subprocess.CompletedProcess) -> str:
    return done.stdout.decode(errors="replace").strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- state: what the check made, so that it removes exactly that -------------------------------


@dataclass
class State:
    args: argparse.Namespace
    docker: str = "docker"
    compose: list[str] = field(default_factory=list)
    build_cmd: list[str] = field(default_factory=list)
    build_env: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    dockerd: subprocess.Popen | None = None
    standins: list[str] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)
    built: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # image ids our new tags took over
    cache_before: set[str] | None = None
    stack_started: bool = False
    runs: dict[str, Any] = field(default_factory=dict)
    photos: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose_cmd(self, *words: str) -> list[str]:
        return [*self.compose, "-p", PROJECT, "-f", str(COMPOSE_FILE), "--project-directory",
                str(ROOT), "--profile", "cpu", *words]

    def c(self, *words: str, timeout: float = 300, check: bool = True,
          stdin: bytes | None = None, log_to: Path | None = None) -> subprocess.CompletedProcess:
        return sh(self.compose_cmd(*words), env=self.env, timeout=timeout, check=check,
                  stdin=stdin, log_to=log_to, what=f"compose {words[0]}")

    def d(self, *words: str, timeout: float = 120, check: bool = True,
          stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return sh([self.docker, *words], timeout=timeout, check=check, stdin=stdin,
                  what=f"docker {words[0]}")


# --- steps --------------------------------------------------------------------------------------


def engine_answers(docker: str) -> str | None:
    try:
        done = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, timeout=30)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return None
    version = out(done)
    return version if done.returncode == 0 and version else None


def step_engine(st: State) -> str:
    docker = shutil.which("docker")
    if docker is None:
        fail("no docker command: install Docker (Debian: apt-get install docker.io)")
    st.docker = docker
    version = engine_answers(docker)
    if version is None:
        dockerd = shutil.which("dockerd")
        if dockerd is None or os.geteuid() != 0:
            fail("no Docker engine answers, and this check cannot start one (it needs root "
                 "and dockerd): start Docker, e.g. `systemctl start docker`")
        OUT.mkdir(parents=True, exist_ok=True)
        log_path = OUT / "dockerd.log"
        log.info("no Docker engine answers: starting dockerd myself (log %s); it is stopped "
                 "again at the end%s", log_path, "" if not st.args.keep_engine else
                 " - no: --keep-engine")
        with log_path.open("ab") as dlog:
            st.dockerd = subprocess.Popen([dockerd], stdout=dlog, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 90
        while (version := engine_answers(docker)) is None:
            if st.dockerd.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
                fail(f"dockerd did not come up:\n{tail}")
            time.sleep(1)
        started = "started by this check"
    else:
        started = "already running"
    client = out(st.d("version", "--format", "{{.Client.Version}}", check=False))
    st.compose = find_compose(docker)
    st.build_cmd, st.build_env = find_builder(docker)
    compose_version = out(sh([*st.compose, "version", "--short"], check=False)) or "?"
    return (f"engine {version} ({started}), client {client}, compose: "
            f"{' '.join(Path(w).name if i == 0 else w for i, w in enumerate(st.compose))} "
            f"{compose_version}, build: {' '.join(st.build_cmd[1:])} with "
            f"{st.build_cmd[0]}{' DOCKER_BUILDKIT=1' if st.build_env else ''}")


def find_compose(docker: str) -> list[str]:
    """The compose plugin when there is one, else docker-compose (1.29 reads the file too)."""
    if sh([docker, "compose", "version"], check=False).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy and sh([legacy, "version"], check=False).returncode == 0:
        return [legacy]
    fail("neither `docker compose` nor docker-compose is installed")
    raise AssertionError  # unreachable


def client_major(cli: str) -> int | None:
    done = sh([cli, "version", "--format", "{{.Client.Version}}"], check=False, timeout=30)
    match = re.match(r"(\d+)\.", out(done))
    return int(match.group(1)) if match else None


def find_builder(docker: str) -> tuple[list[str], dict[str, str]]:
    """A BuildKit build (the Dockerfile's secret mounts need it) with the CLIs at hand.

    buildx when installed; else a client before Docker 23, whose own `docker build` speaks
    BuildKit with DOCKER_BUILDKIT=1 (later clients leave that to buildx). Another docker
    on PATH is tried when the first can do neither (e.g. a static client in /usr/local/bin
    next to Debian's docker.io).
    """
    candidates = [docker]
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        cli = os.path.join(folder, "docker")
        if os.access(cli, os.X_OK) and os.path.realpath(cli) not in map(os.path.realpath,
                                                                           candidates):
            candidates.append(cli)
    for cli in candidates:
        if sh([cli, "buildx", "version"], check=False).returncode == 0:
            return [cli, "buildx", "build", "--load"], {}
        major = client_major(cli)
        if major is not None and major < 23:
            return [cli, "build"], {"DOCKER_BUILDKIT": "1"}
    fail("no docker client here builds with BuildKit: install the buildx plugin "
         "(docker-buildx-plugin or docker-buildx)")
    raise AssertionError  # unreachable


def base_images() -> list[str]:
    names = []
    for dockerfile in (DOCKERFILE, REDIS_DOCKERFILE):
        match = re.search(r"^ARG BASE=(\S+)", dockerfile.read_text(), re.M)
        if not match:
            fail(f"{dockerfile.relative_to(ROOT)} has no ARG BASE=...")
        if match.group(1) not in names:
            names.append(match.group(1))
    return names


def image_id(st: State, name: str) -> str | None:
    done = st.d("image", "inspect", "--format", "{{.Id}}", name, check=False)
    return out(done) if done.returncode == 0 else None


def step_base(st: State) -> str:
    said = []
    for name in base_images():
        if image_id(st, name):
            said.append(f"{name} present")
            continue
        pulled = st.d("pull", name, check=False, timeout=600)
        if pulled.returncode == 0:
            st.pulled.append(name)
            said.append(f"{name} pulled")
            continue
        why = (pulled.stdout + pulled.stderr).decode(errors="replace").strip().splitlines()
        log.info("cannot pull %s (%s): making a local stand-in", name,
                 why[-1][:160] if why else "?")
        make_standin(st, name)
        st.standins.append(name)
        said.append(f"{name} stood in (debootstrap + docker import)")
    return "; ".join(said)


def apt_sources() -> list[tuple[str, list[str]]]:
    """(URI, suites) of this machine's Debian package sources (one-line and deb822)."""
    found: list[tuple[str, list[str]]] = []
    apt = Path("/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                found.append((line[1], [line[2]]))
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    found.append((uri, fields.get("suites", "").split()))
    return found


def mirrors(suite: str) -> tuple[str, list[str], str | None]:
    """The mirror for ``suite`` as this machine is configured, with the suites it serves of
    ``suite`` and ``suite-updates``, and the security mirror if there is one."""
    sources = apt_sources()
    main = next((uri for uri, suites in sources if suite in suites), "http://deb.debian.org/debian")
    suites = [suite] + [s for s in (f"{suite}-updates",)
                        if any(uri == main and s in ss for uri, ss in sources)]
    security = next((uri for uri, ss in sources if f"{suite}-security" in ss), None)
    return main.rstrip("/"), suites, security


def make_standin(st: State, name: str) -> None:
    """A Debian image made here: debootstrap's minbase, slimmed like Docker's debian images."""
    match = re.fullmatch(r"(?:docker\.io/)?(?:library/)?debian:([a-z]+)(-slim)?", name)
    if not match:
        fail(f"cannot pull {name}, and the only stand-in this check makes is Debian's")
    suite = match.group(1)
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        fail(f"cannot pull {name}; a stand-in needs root and debootstrap "
             f"(apt-get install debootstrap)")
    mirror, suites, security = mirrors(suite)
    log.info("debootstrap --variant=minbase %s from %s", suite, mirror)
    rootfs = Path(tempfile.mkdtemp(prefix="kplab-rootfs-", dir="/var/tmp"))
    try:
        sh(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror], timeout=1800,
           log_to=OUT / "debootstrap.log", what="debootstrap")
        slim_rootfs(rootfs, mirror, suites, security)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        try:
            imported = subprocess.run([st.docker, "import", "--change", 'CMD ["bash"]', "-",
                                       name], stdin=tar.stdout, capture_output=True,
                                      timeout=600)
        finally:
            tar.stdout.close()
            tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            fail(f"docker import of the stand-in failed: {imported.stderr.decode()[-500:]}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    size = out(st.d("image", "inspect", "--format", "{{.Size}}", name))
    log.info("stand-in %s: %.0f MB, apt sources %s %s%s", name, int(size) / 1e6, mirror,
             " ".join(suites), f" and {security} {suite}-security" if security else "")


def slim_rootfs(rootfs: Path, mirror: str, suites: list[str], security: str | None) -> None:
    """What Docker's debian:*-slim images do: deb822 sources, no docs, man pages, locales or
    package lists, and apt told to keep it so."""
    apt = rootfs / "etc" / "apt"
    (apt / "sources.list").unlink(missing_ok=True)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    stanzas = [f"Types: deb\nURIs: {mirror}\nSuites: {' '.join(suites)}\nComponents: main\n"
               f"Signed-By: {keyring}\n"]
    if security:
        stanzas.append(f"Types: deb\nURIs: {security.rstrip('/')}\nSuites: {suites[0]}-security"
                       f"\nComponents: main\nSigned-By: {keyring}\n")
    (apt / "sources.list.d" / "debian.sources").write_text("\n".join(stanzas))
    (apt / "apt.conf.d" / "docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n')
    (apt / "apt.conf.d" / "docker-no-languages").write_text('Acquire::Languages "none";\n')
    (rootfs / "etc" / "dpkg" / "dpkg.cfg.d" / "docker").write_text(
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/groff/*\n"
        "path-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\n"
        "path-include /usr/share/locale/locale.alias\n")
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*",
                    "var/log/*.log", "var/log/apt/*"):
        for path in rootfs.glob(pattern):
            if path.name in ("partial", "locale.alias", "lock"):
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for doc in (rootfs / "usr" / "share" / "doc").glob("*/*"):
        if doc.name != "copyright":
            shutil.rmtree(doc) if doc.is_dir() and not doc.is_symlink() else doc.unlink()


def cache_records(st: State) -> dict[str, str]:
    """The engine's build cache records: id -> the id of the record it builds on ('')."""
    done = st.d("system", "df", "-v", "--format", "{{json .BuildCache}}", check=False)
    try:
        return {r["ID"]: r.get("Parent") or "" for r in json.loads(out(done) or "[]") or []}
    except (json.JSONDecodeError, TypeError, KeyError):
        return {}


def cache_ids(st: State) -> set[str]:
    return set(cache_records(st))


def ca_bundle(st: State) -> Path | None:
    if st.args.no_ca:
        return None
    if st.args.ca_bundle:
        path = Path(st.args.ca_bundle)
        if not path.is_file():
            fail(f"--ca-bundle {path}: no such file")
        return path
    default = os.environ.get("LAB_CA_BUNDLE") or "/etc/ssl/certs/ca-certificates.crt"
    return Path(default) if Path(default).is_file() else None


def build(st: State, tag: str, dockerfile: Path, context: Path, args: dict[str, str],
          *, secret: Path | None) -> str:
    old = image_id(st, tag)
    cmd = [*st.build_cmd, "--progress=plain", "-f", str(dockerfile), "-t", tag]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    if secret is not None:
        cmd += ["--secret", f"id=ca,src={secret}"]
    log_path = OUT / f"build-{tag.rsplit(':', 1)[-1]}.log"
    log_path.unlink(missing_ok=True)
    started = time.monotonic()
    sh([*cmd, str(context)], env={**os.environ, **st.build_env}, timeout=3600,
       log_to=log_path, what=f"building {tag}")
    st.built.append(tag)
    new = image_id(st, tag)
    if old and old != new:
        st.replaced.append(old)
    size = int(out(st.d("image", "inspect", "--format", "{{.Size}}", tag)))
    return f"{tag} {size / 1e9:.2f} GB in {time.monotonic() - started:.0f} s"


def step_build(st: State) -> str:
    st.cache_before = cache_ids(st)
    secret = ca_bundle(st)
    log.info("CA bundle for pip and npm: %s", f"{secret} (build secret `ca`)" if secret
             else "none")
    said = [build(st, f"{IMAGE}:cpu", DOCKERFILE, ROOT, {"TF_EXTRA": "cpu"}, secret=secret),
            build(st, f"{IMAGE}:redis", REDIS_DOCKERFILE, REDIS_DOCKERFILE.parent, {},
                  secret=None)]
    return "; ".join(said)


PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)\s+-----END CERTIFICATE-----", re.S)


def pem_bodies(data: bytes) -> set[bytes]:
    return {re.sub(rb"\s+", b"", m.group(1)) for m in PEM.finditer(data)}


def check_image(st: State, tag: str, secret: Path | None) -> str:
    """Non-root, no CA variable, and none of the build bundle's certificates that the image
    does not ship itself (in Debian's ca-certificates or certifi) anywhere in its files: a
    proxy's CA handed to the build left no copy."""
    config = json.loads(out(st.d("image", "inspect", "--format", "{{json .Config}}", tag)))
    if config.get("User") in (None, "", "root", "0"):
        fail(f"{tag} runs as root")
    uid = out(st.d("run", "--rm", "--network", "none", "--entrypoint", "id", tag, "-u"))
    if uid == "0":
        fail(f"{tag} runs as uid 0")
    env = [e for e in config.get("Env") or [] if e.split("=", 1)[0] in CA_VARIABLES]
    if env:
        fail(f"{tag} carries CA settings in its environment: {env}")
    said = f"user {config['User']} (uid {uid}), no CA variables"
    if secret is None:
        return said + "; no CA bundle was handed to the build"
    public = pem_bodies(st.d("run", "--rm", "--network", "none", "--user", "0",
                             "--entrypoint", "sh", tag, "-c",
                             "cat /usr/share/ca-certificates/*/*.crt; find / -xdev -name "
                             "cacert.pem -path '*certifi*' -exec cat {} + 2>/dev/null; true",
                             timeout=120).stdout)
    foreign = pem_bodies(secret.read_bytes()) - public
    if not public:
        fail(f"{tag}: found no public CA certificates to compare with")
    if not foreign:
        return said + f"; every CA of {secret} is one the image ships anyway: nothing to look for"
    # A certificate's second line of base64 (its serial and issuer): what any copy holds.
    needles = {body[64:128] for body in foreign if len(body) > 128}
    container = out(st.d("create", "--network", "none", tag))
    scanned, hits = 0, []
    try:
        export = subprocess.Popen([st.docker, "export", container], stdout=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=export.stdout, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    data = tar.extractfile(member).read()
                    scanned += len(data)
                    if any(needle in data for needle in needles):
                        hits.append(member.name)
        finally:
            export.stdout.close()
            export.wait()
    finally:
        st.d("rm", "-f", container, check=False)
    if hits:
        fail(f"{tag} holds a CA of the build's bundle that it does not ship itself: {hits[:10]}")
    return said + (f"; none of the {len(foreign)} CA(s) of the bundle that the image does not "
                   f"ship itself (the proxy's among them) in its {scanned / 1e9:.2f} GB of files")


def step_image(st: State) -> str:
    return check_image(st, f"{IMAGE}:cpu", ca_bundle(st))


def project_leftovers(st: State) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={PROJECT}"
    found = {
        "containers": out(st.d("ps", "-aq", "--filter", label)).split(),
        "volumes": out(st.d("volume", "ls", "-q", "--filter", label)).split(),
        "networks": out(st.d("network", "ls", "-q", "--filter", label)).split(),
    }
    # Unlabelled ones too, by the names compose gives them.
    volumes = out(st.d("volume", "ls", "-q", "--filter", f"name={PROJECT}_")).split()
    found["volumes"] = sorted(set(found["volumes"]) | set(volumes))
    networks = out(st.d("network", "ls", "-q", "--filter", f"name={PROJECT}_")).split()
    found["networks"] = sorted(set(found["networks"]) | set(networks))
    return {kind: ids for kind, ids in found.items() if ids}


def container_states(st: State) -> dict[str, dict[str, Any]]:
    """Service name -> its container's state, for the project's containers."""
    ids = out(st.d("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}",
                   "--filter", "label=com.docker.compose.oneoff=False")).split()
    if not ids:
        return {}
    raw = json.loads(out(st.d("inspect", *ids)))
    return {c["Config"]["Labels"].get("com.docker.compose.service", c["Name"]): c for c in raw}


def wait_healthy(st: State, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    became: dict[str, float] = {}
    while True:
        states = container_states(st)
        for name, c in states.items():
            health = (c["State"].get("Health") or {}).get("Status")
            if health == "healthy" and name not in became:
                became[name] = time.monotonic() - started
            if c["State"]["Status"] in ("exited", "dead", "restarting") \
                    or health == "unhealthy":
                fail(f"{name} is {c['State']['Status']} ({health}):\n{service_logs(st, name)}")
        if set(became) >= set(SERVICES):
            return ", ".join(f"{name} {became[name]:.0f} s" for name in SERVICES)
        if time.monotonic() > deadline:
            waiting = {n: (c["State"].get("Health") or {}).get("Status")
                       for n, c in states.items() if n not in became}
            fail(f"not healthy after {timeout:.0f} s: {waiting or 'no containers'}")
        time.sleep(2)


def service_logs(st: State, name: str, tail: int = 60) -> str:
    done = st.c("logs", "--no-color", "--tail", str(tail), name, check=False, timeout=60)
    return (done.stdout + done.stderr).decode(errors="replace")


def step_up(st: State) -> str:
    left = project_leftovers(st)
    if left:
        log.warning("leftovers of an earlier check (project %s): %s; removing them", PROJECT,
                    {kind: len(ids) for kind, ids in left.items()})
        st.c("down", "-v", "--remove-orphans", timeout=300)
    st.stack_started = True
    st.c("up", "-d", "--no-build", timeout=300, log_to=OUT / "compose.log")
    return "healthy: " + wait_healthy(st)


def exec_in(st: State, service: str, script: str, *, stdin: bytes | None = None,
            timeout: float = 120) -> str:
    return out(st.c("exec", "-T", service, "sh", "-c", script, timeout=timeout, stdin=stdin))


HEAD_CHECK = """
from sqlalchemy import create_engine
from alembic.runtime.migration import MigrationContext
from core.schema import head_revision
from core.settings import load_settings
with create_engine(load_settings().database_url).connect() as conn:
    current = MigrationContext.configure(conn).get_current_heads()
print(",".join(current), head_revision())
"""


def step_stack(st: State) -> str:
    said = []
    for service in SERVICES:
        pid1 = exec_in(st, service, "cat /proc/1/comm")
        user = exec_in(st, service, "id -un")
        if pid1 != "docker-init":
            fail(f"{service}: PID 1 is {pid1}, not docker-init (init: true)")
        if user in ("root", ""):
            fail(f"{service} runs as {user or '?'}")
        said.append(f"{service} {user} under {pid1}")
    owners = exec_in(st, "web", "stat -c '%U %n' /var/lib/lab /var/lib/lab/lab.sqlite3 /models "
                               "/data /data/dogs-vs-cats")
    for line in owners.splitlines():
        if not line.startswith("lab "):
            fail(f"web: not the lab user's: {line}")
    current, head = exec_in(st, WORKER, "python -", stdin=HEAD_CHECK.encode()).split()[-2:]
    if current != head:
        fail(f"the run store is at revision {current}, not {head}")
    redis_owner = exec_in(st, "redis", "stat -c %U /data")
    return (f"{'; '.join(said)}; state, models and data volumes are lab's, redis's /data is "
            f"{redis_owner}'s; run store at Alembic head {head}")


def step_data(st: State) -> str:
    photos = Path(tempfile.mkdtemp(prefix="kplab-photos-"))
    st.photos = photos
    photos.chmod(0o777)  # the image's user writes them
    script = SYNTHETIC.read_text() + (
        f"\nmake_flat_dataset(Path('/out'), {PER_CLASS}, {PHOTO_PX})\n")
    st.d("run", "--rm", "-i", "--network", "none", "-v", f"{photos}:/out",
         "--entrypoint", "python", f"{IMAGE}:cpu", "-", stdin=script.encode(), timeout=120)
    made = sorted(p.name for p in photos.glob("*.jpg"))
    if len(made) != 2 * PER_CLASS:
        fail(f"made {len(made)} photos, not {2 * PER_CLASS}")
    # As docker-compose.yml's header says to load a dataset.
    st.c("run", "--rm", "--no-deps", "-T", "-v", f"{photos}:/src:ro", WORKER,
         "cp", "-r", "/src/.", "/data/dogs-vs-cats/", timeout=180)
    listed = exec_in(st, WORKER, "ls /data/dogs-vs-cats | wc -l; stat -c %U "
                                 "/data/dogs-vs-cats/cat.0.jpg").split()
    if listed != [str(2 * PER_CLASS), "lab"]:
        fail(f"the data volume holds {listed}")
    return f"{len(made)} photos ({PER_CLASS} a class, {PHOTO_PX} px) in the data volume, lab's"


def api(st: State, method: str, path: str, body: Any = None, *, data: bytes | None = None,
        content_type: str | None = None, timeout: float = 60) -> tuple[int, Any]:
    headers = {}
    if body is not None:
        data, content_type = json.dumps(body).encode(), "application/json"
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(st.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        fail(f"{method} {path}: {exc}")
    try:
        return status, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")[:500]


def launch(st: State, config: dict[str, Any]) -> str:
    status, body = api(st, "POST", "/api/runs", config)
    if status != 202:
        fail(f"POST /api/runs answered {status}: {body}")
    return body["id"]


def wait_run(st: State, run_id: str, statuses: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, run = api(st, "GET", f"/api/runs/{run_id}")
        if status == 200 and run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            fail(f"run {run_id} is {run.get('status') if isinstance(run, dict) else run} "
                 f"after {timeout:.0f} s:\n{service_logs(st, WORKER)}")
        time.sleep(1)


def events(st: State, run_id: str) -> list[dict[str, Any]]:
    status, body = api(st, "GET", f"/api/runs/{run_id}/events")
    if status != 200:
        fail(f"GET /api/runs/{run_id}/events answered {status}: {body}")
    return body["events"]


def step_train(st: State) -> str:
    run_id = launch(st, TINY)
    run = wait_run(st, run_id, ("succeeded", "failed", "cancelled"), timeout=600)
    if run["status"] != "succeeded":
        fail(f"run {run_id} {run['status']}: {run.get('error')}\n{service_logs(st, WORKER)}")
    model = exec_in(st, "web", f"stat -c '%s %U' /models/{run_id}/model.keras")
    found = events(st, run_id)
    st.runs["tiny"] = {"id": run_id, "events": found}
    types = sorted({e["type"] for e in found})
    return (f"run {run_id} succeeded (val accuracy {run.get('best_val_accuracy')}), "
            f"{len(found)} events ({', '.join(types)}), /models/{run_id}/model.keras "
            f"{model.split()[0]} bytes, {model.split()[1]}'s")


def multipart(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    for name, path in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{path.name}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
                     + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def predict(st: State, run_id: str) -> str:
    assert st.photos is not None
    said = []
    for name in ("cat.0.jpg", "dog.0.jpg"):
        data, content_type = multipart({"model": run_id}, {"photos": st.photos / name})
        status, body = api(st, "POST", "/api/predict", data=data, content_type=content_type,
                           timeout=120)
        if status != 200:
            fail(f"POST /api/predict answered {status}: {body}")
        result = body["results"][0]
        if body["model"]["run_id"] != run_id or result.get("label") not in ("cat", "dog"):
            fail(f"POST /api/predict: unexpected answer {body}")
        said.append(f"{name} -> {result['label']} ({result['confidence']:.2f})")
    return f"model {run_id}: " + ", ".join(said)


def step_predict(st: State) -> str:
    return predict(st, st.runs["tiny"]["id"])


def step_shutdown(st: State) -> str:
    run_id = launch(st, ENDLESS)
    st.runs["endless"] = {"id": run_id}
    deadline = time.monotonic() + 300
    while not any(e["type"] == "batch" for e in events(st, run_id)):
        if time.monotonic() > deadline:
            fail(f"run {run_id} trained no batch in 300 s:\n{service_logs(st, WORKER)}")
        time.sleep(1)
    started = time.monotonic()
    st.c("stop", timeout=GRACE_S + 60, log_to=OUT / "compose.log")
    took = time.monotonic() - started
    states = container_states(st)
    codes = {name: (c["State"]["ExitCode"], c["State"]["OOMKilled"])
             for name, c in states.items()}
    logs = service_logs(st, WORKER, tail=200)
    (OUT / "worker-shutdown.log").write_text(logs)
    worker_code, _ = codes.get(WORKER, (None, None))
    if worker_code is None:
        fail(f"no {WORKER} container after stop: {codes}")
    if worker_code == 137 or took >= GRACE_S:
        fail(f"{WORKER} was killed (exit {worker_code}) after {took:.0f} s: its warm shutdown "
             f"did not finish within {GRACE_S} s\n{logs[-3000:]}")
    killed = [name for name, (code, oom) in codes.items() if code == 137 or oom]
    if killed:
        fail(f"SIGKILLed on stop: {killed} ({codes})")
    if "shutting down" not in logs:
        fail(f"{WORKER}'s log does not say it stopped its run for the shutdown:\n{logs[-3000:]}")
    return (f"run {run_id} was training; compose stop took {took:.1f} s, exit codes "
            f"{', '.join(f'{n} {c}' for n, (c, _) in sorted(codes.items()))} (none killed)")


def step_restart(st: State) -> str:
    st.c("down", timeout=300, log_to=OUT / "compose.log")
    volumes = sorted(out(st.d("volume", "ls", "-q", "--filter", f"name={PROJECT}_")).split())
    if len(volumes) != 4:
        fail(f"after down the project's volumes are {volumes}, not 4")
    st.c("up", "-d", "--no-build", timeout=300, log_to=OUT / "compose.log")
    healthy = wait_healthy(st)
    tiny, endless = st.runs["tiny"], st.runs["endless"]
    run = wait_run(st, tiny["id"], ("succeeded",), timeout=10)
    again = events(st, tiny["id"])
    if again != tiny["events"]:
        fail(f"run {tiny['id']}: {len(again)} events after the restart, "
             f"{len(tiny['events'])} before (or they differ)")
    ended = wait_run(st, endless["id"], ("cancelled", "failed", "succeeded"), timeout=10)
    if ended["status"] != "cancelled":
        fail(f"the run training at the shutdown is {ended['status']} ({ended.get('error')}), "
             f"not cancelled")
    exec_in(st, WORKER, f"test -s /models/{tiny['id']}/model.keras")
    predicted = predict(st, run["id"])
    return (f"healthy again ({healthy}); run {tiny['id']} succeeded with its "
            f"{len(again)} events, run {endless['id']} cancelled "
            f"({ended.get('error') or 'no error'}); {predicted}")


def step_gpu_build(st: State) -> str:
    said = build(st, f"{IMAGE}:gpu", DOCKERFILE, ROOT, {"TF_EXTRA": "gpu"},
                 secret=ca_bundle(st))
    versions = out(st.d("run", "--rm", "--network", "none", "--entrypoint", "python",
                        f"{IMAGE}:gpu", "-c",
                        "import importlib.metadata as m\n"
                        "def v(n):\n"
                        "    try: return m.version(n)\n"
                        "    except m.PackageNotFoundError: return '-'\n"
                        "print(v('tensorflow'), v('tensorflow-cpu'), v('nvidia-cudnn-cu12'))"))
    tf, tf_cpu, cudnn = versions.split()
    if tf == "-" or tf_cpu != "-" or cudnn == "-":
        fail(f"the GPU image has tensorflow {tf}, tensorflow-cpu {tf_cpu}, cuDNN {cudnn}")
    checked = check_image(st, f"{IMAGE}:gpu", ca_bundle(st))
    return (f"{said}: tensorflow {tf} with cuDNN {cudnn} (not run: no GPU here); {checked}")


# --- teardown -----------------------------------------------------------------------------------


def teardown(st: State) -> str:
    """Remove what the check made; raises CheckFailed when something is left."""
    problems, said = [], []
    if st.stack_started:
        done = st.c("down", "-v", "--remove-orphans", timeout=300, check=False,
                    log_to=OUT / "compose.log")
        if done.returncode != 0:
            problems.append(f"compose down -v failed (exit {done.returncode})")
        left = project_leftovers(st)
        if left:
            problems.append(f"left behind: {left}")
        else:
            said.append("no container, network or volume of the project left")
    if st.photos is not None:
        shutil.rmtree(st.photos, ignore_errors=True)
    if st.args.keep_images:
        kept = st.built + st.standins + st.pulled
        said.append(f"kept images (--keep-images): {', '.join(kept) or 'none'}")
    else:
        for name in [*st.built, *st.standins, *st.pulled]:
            if image_id(st, name) and st.d("rmi", name, check=False).returncode != 0:
                problems.append(f"could not remove image {name}")
        for old in st.replaced:  # an earlier --keep-images run's image under our tag
            st.d("rmi", old, check=False)
        gone = [n for n in [*st.built, *st.standins, *st.pulled] if image_id(st, n) is None]
        if gone:
            said.append(f"removed images {', '.join(gone)}")
        if st.cache_before is not None:
            said.append(prune_cache(st))
    if problems:
        fail("; ".join(problems))
    return "; ".join(said) or "nothing to remove"


def chain_depth(rid: str, parents: dict[str, str]) -> int:
    """How many records of ``parents`` lie under ``rid`` (itself included)."""
    seen = 0
    while rid in parents and seen < len(parents):
        rid, seen = parents[rid], seen + 1
    return seen


def prune_cache(st: State) -> str:
    """The build cache records this check's builds made (and only those): each record goes
    once the records built on it have, so the deepest go first, pass after pass."""
    assert st.cache_before is not None
    pruned = 0
    while True:
        records = cache_records(st)
        new = {rid: parent for rid, parent in records.items() if rid not in st.cache_before}
        before = pruned
        for rid in sorted(new, key=lambda rid, new=new: chain_depth(rid, new), reverse=True):
            done = st.d("builder", "prune", "-f", "--filter", f"id={rid}", check=False)
            pruned += rid in out(done)
        if not new or pruned == before:
            break
    left = set(cache_records(st)) - st.cache_before
    return (f"pruned {pruned} build cache records of this check"
            + (f", {len(left)} left" if left else ", none left"))


def stop_engine(st: State) -> str | None:
    if st.dockerd is None or st.args.keep_engine:
        return None
    st.dockerd.terminate()
    try:
        st.dockerd.wait(timeout=60)
    except subprocess.TimeoutExpired:
        st.dockerd.kill()
        st.dockerd.wait()
    return "stopped the dockerd this check started"


# --- main -----------------------------------------------------------------------------------------


STEPS = [("engine", step_engine), ("base", step_base), ("build", step_build),
         ("image", step_image), ("up", step_up), ("stack", step_stack), ("data", step_data),
         ("train", step_train), ("predict", step_predict), ("shutdown", step_shutdown),
         ("restart", step_restart)]


@contextlib.contextmanager
def timed(results: list[tuple[str, str, float, str]], name: str) -> Iterator[list[str]]:
    log.info("== %s", name)
    started = time.monotonic()
    said: list[str] = []
    try:
        yield said
    except CheckFailed as exc:
        took = time.monotonic() - started
        results.append((name, "FAILED", took, str(exc).splitlines()[0][:200]))
        log.error("-- %s FAILED after %.1f s: %s", name, took, exc)
        raise
    except BaseException as exc:
        took = time.monotonic() - started
        results.append((name, "FAILED", took, f"{type(exc).__name__}: {exc}"[:200]))
        log.exception("-- %s FAILED after %.1f s", name, took)
        raise
    took = time.monotonic() - started
    results.append((name, "ok", took, said[0] if said else ""))
    log.info("-- %s ok in %.1f s: %s", name, took, said[0] if said else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-images", action="store_true",
                        help="keep the built, pulled and stand-in images and the build cache")
    parser.add_argument("--keep-engine", action="store_true",
                        help="leave a dockerd this check started running")
    parser.add_argument("--build-gpu", action="store_true",
                        help="also build the TF_EXTRA=gpu image (several GB; it is not run)")
    parser.add_argument("--ca-bundle", help="CA bundle for pip and npm in the build "
                        "(default: $LAB_CA_BUNDLE, else /etc/ssl/certs/ca-certificates.crt)")
    parser.add_argument("--no-ca", action="store_true", help="hand no CA bundle to the build")
    parser.add_argument("--keep-stack-on-failure", action="store_true",
                        help="leave the stack up after a failed step, to look at it")
    args = parser.parse_args(argv)

    start = time.time()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(ElapsedFormatter(start))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "compose.log").unlink(missing_ok=True)
    log.info("compose check of %s (project %s, images %s:*, logs in %s)", ROOT, PROJECT, IMAGE,
             OUT)

    st = State(args)
    results: list[tuple[str, str, float, str]] = []
    ok = True
    steps = list(STEPS)
    if args.build_gpu:
        steps.insert(4, ("gpu-build", step_gpu_build))
    try:
        for name, func in steps:
            with timed(results, name) as said:
                said.append(func(st))
                if name == "engine":
                    st.port = free_port()
                    st.env = {k: v for k, v in os.environ.items()
                              if not k.startswith(("LAB_", "COMPOSE_"))
                              and k not in ("DATABASE_URL", "KAGGLE_USERNAME", "KAGGLE_KEY")}
                    st.env.update(LAB_IMAGE=IMAGE, LAB_PORT=str(st.port), LAB_BIND="127.0.0.1")
    except (CheckFailed, Exception, KeyboardInterrupt):
        ok = False
        if st.stack_started:
            with contextlib.suppress(Exception):
                (OUT / "failure-logs.txt").write_text(
                    out(st.c("logs", "--no-color", "--tail", "300", check=False, timeout=60)))
                log.info("the stack's logs: %s", OUT / "failure-logs.txt")
    finally:
        if not ok and args.keep_stack_on_failure and st.stack_started:
            log.warning("left the stack up (--keep-stack-on-failure): %s -p %s --profile cpu "
                        "down -v", " ".join(st.compose), PROJECT)
        elif st.docker:
            try:
                with timed(results, "teardown") as said:
                    said.append(teardown(st))
            except (CheckFailed, Exception):
                ok = False
        with contextlib.suppress(Exception):
            if stopped := stop_engine(st):
                log.info("%s", stopped)

    total = time.time() - start
    log.info("")
    log.info("%-10s %-7s %8s  %s", "step", "result", "seconds", "")
    for name, result, took, said in results:
        log.info("%-10s %-7s %8.1f  %s", name, result, took, said[:150])
    log.info("total wall time %.1f s (%s): %s", total, time.strftime(
        "%H:%M:%S", time.gmtime(total)), "every step passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
