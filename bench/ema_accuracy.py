"""bench/accuracy.py with an exponential moving average (EMA) of the weights: a measurement
of the lever before it is a lab setting.

Adam keeps the average (``use_ema``); Keras's ``SwapEMAWeights(swap_on_epoch=True)`` puts
it in the model for each epoch's validation, checkpoint and panel, and the saved model is
the averaged one. Both are patched in here (the callback in ``ml.event_callback``), so
the run is otherwise exactly ``bench/accuracy.py``'s, with every one of its options:

    python bench/ema_accuracy.py --ema-momentum 0.99 --data ../shared/data/dogs-vs-cats/train \\
        --recipe flash_cnn --photo-cache bench/out/photo-cache --seed 1 --tag ema99-seed1

With progressive resizing (two fits) Keras writes the average into the weights at the end of
the first fit, so the full-size epochs start from the averaged weights.
"""

from __future__ import annotations

import argparse
import functools
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml import event_callback  # noqa: E402
from ml.tf_env import import_tensorflow_quietly  # noqa: E402


def _with_ema_swap(make_event_callback):
    """The lab's event callback, with the EMA swapped in before its epoch end (so the
    checkpoint and panel see the averaged weights) and around every validation pass."""
    import keras

    def make(*args, **kwargs):
        progress = make_event_callback(*args, **kwargs)
        swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)

        class SwappedProgress(keras.callbacks.Callback):
            def __getattr__(self, name):  # what ml.train reads: best_epoch, cancelled, ...
                return getattr(progress, name)

            def set_model(self, model):
                swap.set_model(model)
                progress.set_model(model)

            def set_params(self, params):
                swap.set_params(params)
                progress.set_params(params)

            def on_epoch_begin(self, epoch, logs=None):
                swap.on_epoch_begin(epoch, logs)
                progress.on_epoch_begin(epoch, logs)

            def on_epoch_end(self, epoch, logs=None):
                swap.on_epoch_end(epoch, logs)
                progress.on_epoch_end(epoch, logs)

            def on_test_begin(self, logs=None):
                swap.on_test_begin(logs)

            def on_test_end(self, logs=None):
                swap.on_test_end(logs)

            def on_train_batch_end(self, batch, logs=None):
                progress.on_train_batch_end(batch, logs)

        return SwappedProgress()

    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--ema-momentum", type=float, default=0.99)
    args, rest = parser.parse_known_args()
    import_tensorflow_quietly()
    import keras

    keras.optimizers.Adam = functools.partial(keras.optimizers.Adam, use_ema=True,
                                              ema_momentum=args.ema_momentum)
    event_callback.make_event_callback = _with_ema_swap(event_callback.make_event_callback)
    sys.argv = [str(ROOT / "bench/accuracy.py"), *rest]
    runpy.run_path(str(ROOT / "bench/accuracy.py"), run_name="__main__")


if __name__ == "__main__":
    main()
