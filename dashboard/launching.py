"""Launching a run from a request: the caller's rights and caps checked, then the run created
and queued by the runs service. The API (``POST /api/runs``) and the Train form both launch
through :func:`launch`.
"""

from __future__ import annotations

import threading
from typing import Any

from dashboard import access
from dashboard.helpers import run_service
from ml.config import TrainConfig

REDIS_DOWN = ("the job queue (Redis) is not reachable, so the run cannot be queued; "
              "start redis-server (make run does) and try again")

# The lab has one web process: launches are checked against the cap and stored one at a
# time, so 30 sent at once cannot all pass a count taken before any of them was stored.
_launch_lock = threading.Lock()


def launch(config: TrainConfig) -> dict[str, Any]:
    """Check the caller may launch, then create and queue the run; the run as stored.

    Raises access.Denied when the caller lacks the passcode or has too many runs waiting,
    and core.run_service.QueueDown, leaving no trace, when Redis cannot take the task.
    """
    service = run_service()
    access.require_launch_rights()
    launched_from = access.launched_from()
    owner, owner_name = access.owner_id(), access.display_name()
    with _launch_lock:
        access.check_caps(service.store)
        return service.create(config.to_dict(), launched_from=launched_from, owner=owner,
                              owner_name=owner_name)
