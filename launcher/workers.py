"""How many training workers ``make run`` starts, and what each one gets.

One worker trains one run at a time. On a GPU machine: ``LAB_RUNS_PER_GPU`` workers per GPU,
each shown only its GPU (``CUDA_VISIBLE_DEVICES``); they share its memory by growth, or each
gets ``LAB_GPU_MEMORY_MB``. On a CPU machine several workers would only split the same cores
(docs/BENCHMARKS.md, "Several runs at once"), so the default is one per
``CORES_PER_CPU_WORKER`` cores, and each worker's TensorFlow is held to its share of them.
``LAB_WORKERS`` overrides the count either way.
"""

from __future__ import annotations

from dataclasses import dataclass

# Measured on 2 cores (docs/BENCHMARKS.md): at the default 128 px two runs at once train at
# about the same total photos/s as one alone, each at half the speed and with twice the
# memory; so a small machine trains one at a time (its queue moves as fast) and a bigger
# one gets a run per 8 cores. (At 64 px two at once gave 1.9 times the total: a class of
# small-image runs may set LAB_WORKERS=2.)
CORES_PER_CPU_WORKER = 8


@dataclass(frozen=True)
class WorkerPlan:
    """One worker to start: its Celery name, what the supervisor calls it, its log file's
    name, its environment."""

    name: str
    label: str
    log_name: str
    env: dict[str, str]


def plan_workers(*, port: int, gpus: int, cores: int, workers: int = 0, runs_per_gpu: int = 1,
                 train_threads: int = 0) -> list[WorkerPlan]:
    """The workers for a lab on ``port`` on a machine with ``gpus`` GPUs and ``cores`` CPU
    cores; ``workers``/``runs_per_gpu``/``train_threads`` as the settings say (0: choose)."""
    if workers <= 0:
        workers = gpus * max(1, runs_per_gpu) if gpus else max(1, cores // CORES_PER_CPU_WORKER)
    plans = []
    for i in range(workers):
        env: dict[str, str] = {}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i // max(1, runs_per_gpu) % gpus)
        elif workers > 1 and train_threads <= 0:
            env["LAB_TRAIN_THREADS"] = str(max(1, cores // workers))
        # The first keeps the name a lab of one worker always had; a restarted worker keeps
        # its name, so it fails the run its previous process was training at once.
        name = f"lab-{port}" if i == 0 else f"lab-{port}-{i + 1}"
        label = "the training worker" if workers == 1 else f"the training worker {i + 1}"
        log_name = "worker.log" if i == 0 else f"worker-{i + 1}.log"
        plans.append(WorkerPlan(name, label, log_name, env))
    return plans
