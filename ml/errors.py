"""Errors the ml library raises for things a person can fix (bad folder, bad option, bad photo).

Each carries one sentence meant to be shown as is: the CLI prints it, the API returns it.
"""


class LabError(Exception):
    """Base class: an error with a message a person can act on."""


class DatasetError(LabError):
    """The dataset folder is missing, empty or unusable."""


class ConfigError(LabError):
    """A training config has unknown keys or values out of bounds.

    ``fields`` maps each bad field to what is wrong with it, so an API can answer 422
    naming every bad field at once.
    """

    def __init__(self, fields: dict[str, str]):
        self.fields = dict(fields)
        super().__init__(
            "invalid training config: " + "; ".join(f"{k}: {v}" for k, v in self.fields.items())
        )


class ImageError(LabError):
    """A photo that cannot be read (empty, corrupt, not an image, too large), or one with
    nothing in it to judge (fully transparent, one flat colour).

    ``status`` is the HTTP status an API answers with: 415 not a photo, 413 too large,
    422 empty, corrupt, truncated or with nothing to judge.
    """

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


class ModelError(LabError):
    """A saved model that cannot be loaded, or a recipe that cannot be built."""


class WeightsDownloadError(ModelError):
    """Pretrained weights could not be downloaded (usually: the machine is offline)."""


class DownloadError(LabError):
    """The dataset could not be downloaded or unpacked (offline, refused, corrupt)."""


class DiskFullError(LabError):
    """The disk under a run's output folder has no room for the run's files.

    Raised before training when the free space is short of what the run needs, and during
    a run when no model at all could be saved; the message says how much room there is.
    """
