"""What the library's caller tells it about where it runs: where pretrained weights and
Kaggle's files come from, and how much memory the input pipeline may cache photos in.

ml/ reads no environment variables. ``core.settings`` reads these (``LAB_WEIGHTS_BASE_URL``,
``LAB_WEIGHTS_DIR``, ``LAB_CACHE_MB``, ``KAGGLE_USERNAME``, ``KAGGLE_KEY``,
``KAGGLE_CONFIG_DIR``, ``LAB_KAGGLE_API``) and its callers hand them on to each function
that takes ``options`` (``ml.train.train`` passes them to the model builders and the
pipeline). No process-wide state: a function given none uses the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_WEIGHTS_BASE_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
)
DEFAULT_CACHE_MB = 4096  # decoded photos kept in RAM per run, at most
KAGGLE_API = "https://www.kaggle.com/api/v1"


@dataclass(frozen=True)
class MlOptions:
    """The library's options; each default is what a lab with nothing set gets."""

    weights_base_url: str = DEFAULT_WEIGHTS_BASE_URL  # Keras's folder, or a mirror of it
    weights_dir: str | None = None  # the downloaded weights' cache (None: Keras's ~/.keras)
    cache_mb: int = DEFAULT_CACHE_MB
    # A Kaggle account; without both, kaggle.json in kaggle_config_dir (None: ~/.kaggle).
    kaggle_username: str | None = None
    kaggle_key: str | None = field(default=None, repr=False)
    kaggle_config_dir: str | None = None
    kaggle_api: str = KAGGLE_API  # another address for tests and mirrors
