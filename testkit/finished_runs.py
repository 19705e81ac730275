"""Finished runs made without training: what a worker leaves, for tests of the pages that
list and use models."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from core.run_service import RunService
from ml import events
from ml.model_io import CARD_FILE, MODEL_FILE


def finished_run(service: RunService, model_dir: Path, *, recipe: str, best: float,
                 val: int | None) -> str:
    """A run taken through its life by a pretend worker, with a copy of the model in
    ``model_dir``, its best validation accuracy ``best`` measured on ``val`` photos."""
    run_id = uuid.uuid4().hex[:12]
    service.store.insert_run(run_id, {"recipe": recipe}, events.run_queued({"recipe": recipe}))
    assert service.claim_next("test")["id"] == run_id
    folder = service.out_dir(run_id)
    folder.mkdir(parents=True)
    shutil.copy(model_dir / MODEL_FILE, folder / MODEL_FILE)
    card = {"status": "succeeded", "metrics": {"best_val_accuracy": best},
            "counts": {"train": 100, "val": val} if val else {}}
    (folder / CARD_FILE).write_text(json.dumps(card))
    service.record(run_id, "test", events.run_finished("succeeded", best_val_accuracy=best))
    return run_id
