"""The lab's run-time switches an instructor sets: a paused queue, locked launching.

They live in the run store's ``lab_flags`` table, so the web process and every worker see
the same value the moment it is set (no restart, no message to lose). A switch nobody has
set yet has its default: the queue runs, and launching is locked only where the
``LAB_LOCK_LAUNCH`` setting says so. Once set, the stored value wins over the setting.
"""

from __future__ import annotations

from typing import Any

from core.store import RunStore

QUEUE_PAUSED = "queue_paused"
LAUNCH_LOCKED = "launch_locked"


class LabFlags:
    """Reads and sets the switches over one store; one read is one small query."""

    def __init__(self, store: RunStore, *, launch_locked_default: bool = False):
        self.store = store
        self.defaults: dict[str, bool] = {QUEUE_PAUSED: False,
                                          LAUNCH_LOCKED: launch_locked_default}

    def state(self) -> dict[str, Any]:
        """Every switch with its value, and who changed it when (None: never set)."""
        stored = self.store.flags()
        shown: dict[str, Any] = {}
        for name, default in self.defaults.items():
            flag = stored.get(name)
            shown[name] = bool(flag["value"]) if flag else default
            shown[f"{name}_by"] = flag["changed_by"] if flag else None
            shown[f"{name}_at"] = flag["changed"] if flag else None
        return shown

    def get(self, name: str) -> bool:
        flag = self.store.flags().get(name)
        return bool(flag["value"]) if flag else self.defaults[name]

    def set(self, name: str, value: bool, *, by: str | None = None) -> None:
        if name not in self.defaults:
            raise KeyError(f"there is no lab switch {name!r}")
        self.store.set_flag(name, bool(value), by=by)

    def queue_paused(self) -> bool:
        return self.get(QUEUE_PAUSED)

    def launch_locked(self) -> bool:
        return self.get(LAUNCH_LOCKED)
