"""Configuration shared by the web process, the workers and ``make run``: the one place that
reads the environment (tests/unit/test_settings.py checks that nothing else does).

Every setting has a local default so ``make run`` needs none of them. Relative paths are
taken from the project root, so web and worker agree whichever folder they start in. What
the ml library needs (weights, Kaggle, the photo cache's budget) is read into its own
``ml.options.MlOptions``, which callers hand on to it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from ml.options import DEFAULT_CACHE_MB, DEFAULT_WEIGHTS_BASE_URL, KAGGLE_API, MlOptions

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATA_DIR = "../shared/data/dogs-vs-cats/train"
DEFAULT_MODELS_DIR = "models"
DEFAULT_STATE_DIR = "lab-data"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def _path(value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (ROOT / path)


def _number(env: Mapping[str, str], name: str, default: float, *, whole: bool = False
            ) -> float:
    """Seconds (positive), or with ``whole`` a count (0 or more)."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    kind, what = (int, "a whole number") if whole else (float, "a number of seconds")
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {raw!r}") from None
    if value < 0 or (value == 0 and not whole):
        raise ValueError(f"{name} must be {'0 (no limit) or more' if whole else 'positive'}, "
                         f"got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Where the lab keeps things and how its parts find each other."""

    redis_url: str
    database_url: str
    data_dir: Path
    models_dir: Path
    # A running run whose worker has not written a heartbeat for this long is marked lost.
    heartbeat_s: float = 5.0
    lost_after_s: float = 60.0
    # How long the web process's writes wait for another process's lock on the run store
    # before answering "busy" (503); workers wait longer (core.store.DEFAULT_BUSY_S).
    store_busy_s: float = 3.0
    state_dir: Path = ROOT / DEFAULT_STATE_DIR
    # Launching and cancelling others' runs need this when set; an open lab when None.
    passcode: str | None = field(default=None, repr=False)
    # Signs session cookies; kept in state_dir when unset.
    secret_key: str | None = field(default=None, repr=False)
    # Reverse proxies in front of the web process that append to X-Forwarded-For (and set
    # X-Forwarded-Proto/Host): the caller's address is the entry that many from the right.
    trusted_proxies: int = 0
    # Queued or running runs per address, for a public lab; 0 (the default): no such cap.
    max_active_per_address: int = 0
    # Queued or running runs per owner (a browser), and queued runs in all; 0: no cap.
    max_runs_per_owner: int = 2
    max_queued: int = 60
    # Whether launching needs the passcode (always True when a passcode is set by hand,
    # False when make run made one up: the class launches, the instructor controls).
    lock_launch: bool = False
    # Pages on these origins may call the lab from a browser, besides the lab's own.
    allowed_origins: tuple[str, ...] = ()
    # The session cookie's name: side-by-side labs on one host keep their own sessions.
    session_cookie: str = "lab_session"
    # Each training process's share of a GPU's memory; 0: as much as it grows to need.
    gpu_memory_mb: int = 0
    # Training workers make run starts (0: one per GPU times runs_per_gpu, or on a CPU
    # machine one per launcher.workers.CORES_PER_CPU_WORKER cores, as measured:
    # launcher.workers.plan_workers); runs sharing each GPU.
    workers: int = 0
    runs_per_gpu: int = 1
    # CPU threads each training process may use (0: all): several workers on one machine
    # split the cores instead of each starting a thread per core.
    train_threads: int = 0
    # Decoded photos shared by every run (ml.photo_cache), in state_dir/photo-cache.
    photo_cache: bool = True
    # make run: how long before a part that died is started again (doubled each time it
    # dies again soon after, up to 30 s).
    restart_backoff_s: float = 1.0
    # Where the web process listens (python -m dashboard, make run) and how much it logs.
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_level: str = "INFO"
    # Where the Dataset tab's download takes the archive from instead (a mirror).
    dataset_url: str | None = None
    # What the ml library is told: weights, Kaggle, the pipeline's cache budget.
    ml: MlOptions = field(default_factory=MlOptions)

    @property
    def photo_cache_dir(self) -> Path | None:
        """Where the shared decoded photos live, or None when the cache is off."""
        return self.state_dir / "photo-cache" if self.photo_cache else None

    @property
    def socketio_channel(self) -> str:
        """Pub/sub channel of the live events.

        Redis pub/sub ignores the database number, so two labs sharing one redis-server on
        different databases would hear each other: the channel carries the number. It does
        not carry the host, which web and workers on other machines may spell differently.
        """
        db = (urlparse(self.redis_url).path or "/0").strip("/") or "0"
        return f"kitten-puppy-lab:db{db}:live"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def given_database_url(env: Mapping[str, str] | None = None) -> str | None:
    """``DATABASE_URL`` when set (the Alembic command line puts it before its ini file's)."""
    return _env(env).get("DATABASE_URL") or None


def given_passcode(env: Mapping[str, str] | None = None) -> str | None:
    """``LAB_PASSCODE`` as set, even empty (an open lab, on purpose); None when unset
    (``make run`` then makes one up)."""
    return _env(env).get("LAB_PASSCODE")


def load_ml_options(env: Mapping[str, str] | None = None) -> MlOptions:
    """The ml library's options from ``LAB_WEIGHTS_BASE_URL``, ``LAB_WEIGHTS_DIR``,
    ``LAB_CACHE_MB``, ``KAGGLE_USERNAME``, ``KAGGLE_KEY``, ``KAGGLE_CONFIG_DIR`` and
    ``LAB_KAGGLE_API`` (the command line reads only these)."""
    env = _env(env)
    return MlOptions(
        weights_base_url=env.get("LAB_WEIGHTS_BASE_URL") or DEFAULT_WEIGHTS_BASE_URL,
        weights_dir=env.get("LAB_WEIGHTS_DIR") or None,
        cache_mb=int(_number(env, "LAB_CACHE_MB", DEFAULT_CACHE_MB, whole=True)),
        kaggle_username=env.get("KAGGLE_USERNAME") or None,
        kaggle_key=env.get("KAGGLE_KEY") or None,
        kaggle_config_dir=env.get("KAGGLE_CONFIG_DIR") or None,
        kaggle_api=env.get("LAB_KAGGLE_API") or KAGGLE_API)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``REDIS_URL``, ``DATABASE_URL``, ``LAB_DATA_DIR``, ``LAB_MODELS_DIR``..."""
    env = _env(env)
    state_dir = _path(env.get("LAB_STATE_DIR") or DEFAULT_STATE_DIR)
    database_url = given_database_url(env) or f"sqlite:///{state_dir / 'lab.sqlite3'}"
    return Settings(
        redis_url=env.get("REDIS_URL") or DEFAULT_REDIS_URL,
        database_url=database_url,
        data_dir=_path(env.get("LAB_DATA_DIR") or DEFAULT_DATA_DIR),
        models_dir=_path(env.get("LAB_MODELS_DIR") or DEFAULT_MODELS_DIR),
        heartbeat_s=_number(env, "LAB_HEARTBEAT_S", 5.0),
        lost_after_s=_number(env, "LAB_RUN_LOST_AFTER_S", 60.0),
        store_busy_s=_number(env, "LAB_STORE_BUSY_S", 3.0),
        state_dir=state_dir,
        passcode=env.get("LAB_PASSCODE") or None,
        secret_key=env.get("LAB_SECRET_KEY") or None,
        trusted_proxies=_trusted_proxies(env),
        # LAB_MAX_QUEUED_PER_CLIENT is the older name of LAB_MAX_QUEUED_PER_ADDRESS.
        max_active_per_address=int(_number(
            env, "LAB_MAX_QUEUED_PER_ADDRESS" if env.get("LAB_MAX_QUEUED_PER_ADDRESS")
            else "LAB_MAX_QUEUED_PER_CLIENT", 0, whole=True)),
        max_runs_per_owner=int(_number(env, "LAB_MAX_RUNS_PER_STUDENT", 2, whole=True)),
        max_queued=int(_number(env, "LAB_MAX_QUEUED", 60, whole=True)),
        lock_launch=_switch(env, "LAB_LOCK_LAUNCH", default=bool(env.get("LAB_PASSCODE"))),
        allowed_origins=tuple(o.strip().rstrip("/") for o in
                              env.get("LAB_ALLOWED_ORIGINS", "").split(",") if o.strip()),
        session_cookie=env.get("LAB_SESSION_COOKIE")
        or f"lab_session_{env.get('LAB_PORT') or DEFAULT_PORT}",
        gpu_memory_mb=int(_number(env, "LAB_GPU_MEMORY_MB", 0, whole=True)),
        workers=int(_number(env, "LAB_WORKERS", 0, whole=True)),
        runs_per_gpu=max(1, int(_number(env, "LAB_RUNS_PER_GPU", 1, whole=True))),
        train_threads=int(_number(env, "LAB_TRAIN_THREADS", 0, whole=True)),
        photo_cache=_switch(env, "LAB_PHOTO_CACHE", default=True),
        restart_backoff_s=_number(env, "LAB_RESTART_BACKOFF_S", 1.0),
        host=env.get("LAB_HOST") or DEFAULT_HOST,
        port=int(_number(env, "LAB_PORT", DEFAULT_PORT, whole=True)),
        log_level=env.get("LAB_LOG_LEVEL") or "INFO",
        dataset_url=env.get("LAB_DATASET_URL") or None,
        ml=load_ml_options(env),
    )


def _switch(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1 or 0 (on or off), got {raw!r}")


def _trusted_proxies(env: Mapping[str, str]) -> int:
    """``LAB_TRUSTED_PROXIES`` (a count); the older on/off ``LAB_TRUST_PROXY`` means one."""
    if env.get("LAB_TRUSTED_PROXIES") not in (None, ""):
        return int(_number(env, "LAB_TRUSTED_PROXIES", 0, whole=True))
    return 1 if env.get("LAB_TRUST_PROXY", "").lower() in ("1", "true", "yes") else 0
