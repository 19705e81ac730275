"""Plain sentences about how training is going, said at the epoch where something starts.

For beginners watching a run: the curves show overfitting, but only to someone who knows
to look for it. Overfitting is one finding for the rest of the run, from the first epoch
that shows it: a later epoch that shows it again updates the sentence (since when, and how
it stands now) rather than starting a new one, so "What happened" says it once.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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


class Finding(NamedTuple):
    """One thing said about a run: since which epoch, as of which epoch, and the sentence."""

    since: int  # the first epoch that showed it
    epoch: int  # the latest epoch that showed it: the sentence is as of this one
    text: str


def _shows(history: list[dict[str, Any]], i: int) -> bool:
    return _gap(history[i]) or _diverging(history, i)


def _pct(value: float) -> str:
    return f"{100 * value:.0f} %"


def _began(row: dict[str, Any]) -> str:
    if _gap(row):
        return (f"Overfitting from epoch {row['epoch']}: the network gets "
                f"{_pct(row['accuracy'])} of its training photos right but only "
                f"{_pct(row['val_accuracy'])} of the validation photos it never trains "
                f"on, so it is starting to memorise its training photos instead of learning "
                f"what makes a cat or a dog.")
    return (f"Overfitting from epoch {row['epoch']}: validation loss has risen for "
            f"{RISING_EPOCHS} epochs while training loss keeps falling, so the network "
            f"grows surer on its training photos and worse on new ones.")


def _goes_on(start: dict[str, Any], row: dict[str, Any]) -> str:
    since = start["epoch"]
    if _gap(row):
        gap = round(100 * (row["accuracy"] - row["val_accuracy"]))
        was = (None if start.get("accuracy") is None or start.get("val_accuracy") is None
               else round(100 * (start["accuracy"] - start["val_accuracy"])))
        how = "has grown" if was is None or gap > was else "has stayed open"
        return (f"Overfitting since epoch {since}: the gap between training and validation "
                f"accuracy {how} since epoch {since}; at epoch {row['epoch']} the network "
                f"gets {_pct(row['accuracy'])} of its training photos right but only "
                f"{_pct(row['val_accuracy'])} of the validation photos it never trains on, "
                f"so it is memorising its training photos instead of learning what makes a "
                f"cat or a dog.")
    return (f"Overfitting since epoch {since}: at epoch {row['epoch']} validation loss has "
            f"risen for {RISING_EPOCHS} epochs in a row while training loss keeps falling, "
            f"so the network grows surer on its training photos and worse on new ones.")


def overfitting(history: list[dict[str, Any]]) -> Finding | None:
    """The run's overfitting as one finding, as of the last epoch of ``history``; None if
    no epoch has shown it yet.

    Its ``epoch`` is the last epoch of history when that epoch shows overfitting (the
    sentence its event carries), else the latest one that did.
    """
    shown = [i for i in range(len(history)) if _shows(history, i)]
    if not shown:
        return None
    first, last = history[shown[0]], history[shown[-1]]
    text = _began(first) if len(shown) == 1 else _goes_on(first, last)
    return Finding(since=first["epoch"], epoch=last["epoch"], text=text)
