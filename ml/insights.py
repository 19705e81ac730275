"""Plain sentences about how training is going, said at the epoch where something starts.

For beginners watching a run: the curves show overfitting, but only to someone who knows
to look for it. Each rule speaks once when it turns true, not at every epoch after.
"""

from __future__ import annotations

from typing import Any

# Training accuracy this far above validation accuracy is memorising, not learning.
ACCURACY_GAP = 0.10
# Validation loss rising this many epochs in a row while training loss falls.
RISING_EPOCHS = 2


def _gap(row: dict[str, Any]) -> bool:
    acc, val = row.get("accuracy"), row.get("val_accuracy")
    return acc is not None and val is not None and acc - val >= ACCURACY_GAP


def _diverging(history: list[dict[str, Any]], end: int) -> bool:
    """Validation loss up and training loss down in each of the RISING_EPOCHS epochs up to
    ``end`` (an index into history)."""
    if end < RISING_EPOCHS:
        return False
    for i in range(end - RISING_EPOCHS + 1, end + 1):
        before, now = history[i - 1], history[i]
        values = (before.get("val_loss"), now.get("val_loss"), before.get("loss"),
                  now.get("loss"))
        if any(v is None for v in values) or not (values[1] > values[0] and values[3] < values[2]):
            return False
    return True


def overfitting(history: list[dict[str, Any]]) -> str | None:
    """A sentence if the last epoch of ``history`` is where overfitting starts, else None."""
    if not history:
        return None
    end = len(history) - 1
    row = history[end]
    if _gap(row) and not (end and _gap(history[end - 1])):
        return (f"Overfitting from epoch {row['epoch']}: the network gets "
                f"{100 * row['accuracy']:.0f} % of its training photos right but only "
                f"{100 * row['val_accuracy']:.0f} % of the validation photos it never trains "
                f"on, so it is starting to memorise its training photos instead of learning "
                f"what makes a cat or a dog.")
    if _diverging(history, end) and not _diverging(history, end - 1):
        return (f"Overfitting from epoch {row['epoch']}: validation loss has risen for "
                f"{RISING_EPOCHS} epochs while training loss keeps falling, so the network "
                f"grows surer on its training photos and worse on new ones.")
    return None
