"""The runs service: the one owner of a run's life, from launch to its last event.

Web views, Socket.IO handlers and the Celery task call it; none of them writes run rows or
events themselves. Every change goes through :meth:`core.store.RunStore.transition`, so the
event that tells viewers of a change is stored with it, in one transaction, numbered by the
store, and only when the change still applies: a worker whose run was reaped or cancelled
underneath it learns so at its next event (:class:`RunGone`) and stops.

Which queued run starts next is decided here (:meth:`RunService.claim_next`): the fair
order of :mod:`core.queue`. Each launch puts one "train the next run" task on the queue;
whichever worker takes a task claims the next queued run in one conditional update, so a
run is claimed once, and a task whose run was cancelled meanwhile simply finds the next one
or none.

An instructor may pause the queue (:mod:`core.lab_flags`): launches still queue, but a task
taken while it is paused claims nothing and ends. Resuming sends the tasks the queued runs
lack (as :meth:`RunService.heal_queue` does for tasks Redis lost) rather than keeping tasks
back while paused: a Celery message cannot wait on a worker without a worker slot (and its
prefetch) held or a retry loop that polls, and spare tasks are harmless (they find nothing).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from core.lab_flags import LAUNCH_LOCKED, QUEUE_PAUSED, LabFlags
from core.store import FINISHED, RunStore
from ml import events
from ml.events import Body, Event
from ml.model_io import CARD_FILE, MODEL_FILE, read_card

log = logging.getLogger(__name__)

WORKER_LOST = "worker lost: the worker stopped while training this run (killed or crashed)"
SHUTDOWN_REASON = "stopped early because its worker was shut down; the best epoch so far is kept"


class Bus(Protocol):
    """Where the service announces changes (``core.bus.Publisher``): best effort."""

    def publish(self, ev: Event) -> None: ...

    def publish_queue(self, positions: dict[str, int | None]) -> None: ...


class QueueDown(Exception):
    """The run could not be queued (the broker is unreachable); nothing was kept."""


class RunGone(Exception):
    """The run is no longer this worker's to train (reaped, or finished by someone else)."""

    def __init__(self, run_id: str, status: str | None, error: str | None = None):
        self.run_id, self.status = run_id, status
        why = f" ({error})" if error else ""
        super().__init__(f"run {run_id} is {status or 'gone from the run store'}{why} and no "
                         f"longer this worker's: it stops training it and leaves the run as "
                         f"it is")


class RunService:
    """Lifecycle of runs over one store. One per process; safe to share between threads."""

    def __init__(self, store: RunStore, *, models_dir: Path, bus: Bus | None = None,
                 enqueue: Callable[[], None] | None = None, lost_after_s: float = 60.0,
                 launch_locked_default: bool = False):
        self.store = store
        self.flags = LabFlags(store, launch_locked_default=launch_locked_default)
        self.models_dir = Path(models_dir)
        self._bus = bus
        self._enqueue = enqueue
        self.lost_after_s = lost_after_s

    # -- announcing -------------------------------------------------------------------------

    def _announce(self, ev: Event | None, *, queue_changed: bool = False,
                  left_queue: str | None = None) -> None:
        if self._bus is None:
            return
        if ev is not None:
            self._bus.publish(ev)
        if queue_changed or left_queue:
            positions: dict[str, int | None] = {**self.queue_positions()}
            if left_queue:
                positions[left_queue] = None  # its viewers stop showing a place in line
            self._bus.publish_queue(positions)

    def queue_positions(self) -> dict[str, int]:
        """Each queued run's place in the order runs will start (1 = next)."""
        return self.store.queue_positions()

    # -- launch -----------------------------------------------------------------------------

    def create(self, config: dict[str, Any], *, launched_from: str | None = None,
               owner: str | None = None, owner_name: str | None = None) -> dict[str, Any]:
        """Store a new queued run and put a training task on the queue; the run as stored.

        ``owner`` is who launched it (a browser's id), ``owner_name`` the name they gave and
        ``launched_from`` "<address>/<owner>", which the per-address caps count.
        Raises QueueDown, leaving no trace of the run, when the queue cannot take the task.
        """
        run_id = uuid.uuid4().hex[:12]
        queued = self.store.insert_run(run_id, config, events.run_queued(config),
                                       launched_from=launched_from, owner=owner,
                                       owner_name=owner_name)
        if self._enqueue is not None:
            try:
                self._enqueue()
            except Exception as exc:
                log.warning("could not queue run %s: %s", run_id, exc)
                self.store.delete_run(run_id)
                raise QueueDown(str(exc)) from exc
        log.info("run %s queued: %s", run_id, config)
        self._announce(queued, queue_changed=True)
        return self.store.get_run(run_id) or {}

    def heal_queue(self, count_waiting: Callable[[], int], *, confirm_after_s: float = 0.0,
                   sleep: Callable[[float], None] = time.sleep) -> int:
        """Send training tasks for queued runs that have none (Redis lost its data, a message
        was dropped): ``count_waiting()`` says how many tasks are on the queue now. Returns
        how many it sent.

        A task that a worker has just taken off the queue but whose run it has not claimed
        yet looks like a lost one for a moment: with ``confirm_after_s`` a shortfall is only
        believed when a second look that much later still sees it (the web process's
        periodic check; a restarting worker has nothing of its own in flight).
        A task claims the next queued run, not a given one, so a spare one finds nothing to
        do and a run is never trained twice.
        """
        if self.flags.queue_paused():
            return 0  # nothing may start: the tasks are sent when the queue is resumed
        missing = len(self.store.run_ids(status="queued")) - count_waiting()
        if missing > 0 and confirm_after_s:
            sleep(confirm_after_s)
            missing = min(missing, len(self.store.run_ids(status="queued")) - count_waiting())
        if missing <= 0 or self._enqueue is None:
            return 0
        for _ in range(missing):
            self._enqueue()
        log.warning("%d queued run(s) had no task on the queue (Redis lost it?): sent again",
                    missing)
        return missing

    # -- the worker's side ------------------------------------------------------------------

    def claim_next(self, worker: str) -> dict[str, Any] | None:
        """queued → running for the next run in the fair order (``core.queue``); None when
        nothing is queued or the queue is paused. Workers on other machines may claim at
        the same moment: the conditional update lets one of them have each run, and the
        other takes the next."""
        while True:
            if self.flags.queue_paused():
                return None
            queued = list(self.store.queue_positions())  # in order
            if not queued:
                return None
            now = time.time()
            for run_id in queued:
                if self.store.update_run(run_id, where={"status": "queued"}, status="running",
                                         started=now, heartbeat=now, worker=worker):
                    self._announce(None, left_queue=run_id)
                    return self.store.get_run(run_id)
            # every one was taken or cancelled while this worker looked: look again

    def out_dir(self, run_id: str) -> Path:
        """Where a run's model and card are written."""
        return self.models_dir / run_id

    def record(self, run_id: str, worker: str, body: Body) -> Event:
        """Store and announce one event of a run this worker trains.

        The run's bookkeeping moves with it (epochs done, best accuracy, heartbeat), and
        ``run_finished`` ends the run with its card as summary. Raises RunGone when the run
        is no longer running on this worker.
        """
        values: dict[str, Any] = {"heartbeat": time.time()}
        kind = body["type"]
        if kind == "epoch":
            values["epochs_done"] = body["epoch"]
        elif kind == "checkpoint":
            values["best_val_accuracy"] = body["val_accuracy"]
        elif kind == "run_finished":
            values.update(self._final_values(run_id, body))
            if body["status"] == "cancelled":  # who asked is known here, not in the worker
                current = self.store.get_run(run_id)
                body = events.run_finished(
                    "cancelled", best_val_accuracy=body["best_val_accuracy"],
                    best_epoch=body["best_epoch"], model_id=body["model_id"],
                    error=body["error"], cancelled_by=current and current["cancelled_by"])
        ev = self.store.transition(run_id, body, where={"status": "running", "worker": worker},
                                   **values)
        if ev is None:
            run = self.store.get_run(run_id)
            raise RunGone(run_id, run and run["status"], run and run["error"])
        self._announce(ev)
        return ev

    def _final_values(self, run_id: str, body: Body) -> dict[str, Any]:
        """The columns a run ends with: status, error, and its card (with the epoch history)
        and model when it kept one."""
        status = body["status"]
        values: dict[str, Any] = {"status": status, "finished": time.time()}
        if body.get("error") is not None or status != "cancelled":
            values["error"] = body.get("error")  # a cancelled run keeps the reason it was given
        if status in ("succeeded", "cancelled"):
            out = self.out_dir(run_id)
            card = read_card(out) if (out / CARD_FILE).is_file() else {}
            if card:
                values["summary"] = card
                best = (card.get("metrics") or {}).get("best_val_accuracy")
                if best is not None:
                    values["best_val_accuracy"] = best
            if (out / MODEL_FILE).is_file():
                values["model_path"] = f"{run_id}/{MODEL_FILE}"
        return values

    def heartbeat(self, run_id: str, worker: str) -> bool:
        """Say the worker still trains the run; False when the run is no longer its own."""
        return self.store.update_run(run_id, where={"status": "running", "worker": worker},
                                     heartbeat=time.time())

    def cancel_requested(self, run_id: str) -> bool:
        return self.store.cancel_requested(run_id)

    # -- the instructor's controls ------------------------------------------------------------

    def pause_queue(self, *, by: str | None = None) -> None:
        """No queued run starts until :meth:`resume_queue`; launches still queue."""
        self.flags.set(QUEUE_PAUSED, True, by=by)
        log.info("the queue is paused (by %s)", by or "someone")

    def resume_queue(self, count_waiting: Callable[[], int], *, by: str | None = None) -> int:
        """Let queued runs start again, in the fair order; how many tasks it sent (those
        that workers took and dropped while the queue was paused)."""
        self.flags.set(QUEUE_PAUSED, False, by=by)
        log.info("the queue is resumed (by %s)", by or "someone")
        return self.heal_queue(count_waiting)

    def lock_launching(self, locked: bool, *, by: str | None = None) -> None:
        """Whether launching needs the passcode from now on (over the LAB_LOCK_LAUNCH
        default)."""
        self.flags.set(LAUNCH_LOCKED, locked, by=by)
        log.info("launching is %s (by %s)", "locked" if locked else "open", by or "someone")

    def archive(self, run_id: str, archived: bool = True) -> str:
        """Hide a finished run from the list and the board, or show it again; never deleted
        (its page, events and model stay). ``archived``, ``unarchived``, ``active`` (it has
        not ended: archive it once it has) or ``missing``."""
        done = self.store.update_run(run_id, where={"status": FINISHED},
                                     archived=time.time() if archived else None)
        if done:
            log.info("run %s %s", run_id, "archived" if archived else "unarchived")
            return "archived" if archived else "unarchived"
        return "missing" if self.store.get_run(run_id) is None else "active"

    def promote(self, run_id: str) -> bool:
        """Move a queued run to the front of the queue ("run next"); False when it is not
        queued. Several promoted runs go in the order they were promoted."""
        moved = self.store.update_run(run_id, where={"status": "queued"}, promoted=time.time())
        if moved:
            log.info("run %s moved to the front of the queue", run_id)
            self._announce(None, queue_changed=True)
        return moved

    # -- stopping ---------------------------------------------------------------------------

    def cancel(self, run_id: str, *, reason: str | None = None, by: str | None = None) -> str:
        """Cancel a run; the outcome:

        ``cancelled`` — it was queued and is now cancelled (its ``run_finished`` is out);
        ``cancelling`` — it is running; its worker stops at the next batch;
        ``finished`` — it had ended already; ``missing`` — there is no such run.
        ``reason`` (for a running run) is kept as the run's note when it ends cancelled, and
        ``by`` ("Ada", "the instructor") is who cancelled it, shown with the run.
        """
        ev = self.store.transition(run_id, events.run_finished("cancelled", cancelled_by=by),
                                   where={"status": "queued"}, status="cancelled",
                                   finished=time.time(), cancel_requested=True,
                                   cancelled_by=by)
        if ev is not None:
            self._announce(ev, left_queue=run_id)
            return "cancelled"
        if self.store.update_run(run_id, where={"status": "running"}, cancel_requested=True,
                                 error=reason, cancelled_by=by):
            return "cancelling"
        return "missing" if self.store.get_run(run_id) is None else "finished"

    def stop_for_shutdown(self, worker: str) -> list[str]:
        """Ask this worker's running runs to stop at the next batch (a warm shutdown)."""
        stopping = self.store.run_ids(status="running", worker=worker)
        for run_id in stopping:
            self.cancel(run_id, reason=SHUTDOWN_REASON)
            log.warning("run %s: stopping it because the worker is shutting down", run_id)
        return stopping

    def reap_lost(self, *, worker: str | None = None) -> list[Event]:
        """Fail the running runs whose worker is gone; their ``run_finished`` events.

        With ``worker``: every running run of that worker name (it has just started, so what
        it was running died with its previous life). Otherwise: every running run with no
        heartbeat for ``lost_after_s``. The same conditional transition as everything else,
        so a run that finished or beat meanwhile is left alone.
        """
        if worker is not None:
            lost = self.store.run_ids(status="running", worker=worker)
            where: dict[str, Any] = {"status": "running", "worker": worker}
        else:
            cutoff = time.time() - self.lost_after_s
            lost = self.store.run_ids(status="running", heartbeat_before=cutoff)
            where = {"status": "running"}
        reaped = []
        for run_id in lost:
            condition = dict(where)
            if worker is None:
                current = self.store.get_run(run_id)
                if current is None or (current["heartbeat"] or 0) >= cutoff:
                    continue
                condition["heartbeat"] = current["heartbeat"]  # unchanged since read
            ev = self.store.transition(run_id, events.run_finished("failed", error=WORKER_LOST),
                                       where=condition, status="failed",
                                       finished=time.time(), error=WORKER_LOST)
            if ev is not None:
                log.warning("run %s: %s", run_id, WORKER_LOST)
                self._announce(ev)
                reaped.append(ev)
        return reaped
