"""A class on a real stack: N students launch at once; who waits how long, in what order,
and what each run costs besides its epochs.

Starts its own redis-server, ``--workers`` Celery workers and the web server on free ports
in a scratch folder (``launcher.processes``, as the tests do), with ``LAB_PASSCODE`` set
(the instructor), ``LAB_LOCK_LAUNCH=0`` (the class launches without it) and the lab's
default caps (at most 2 queued or training runs a student unless
``--max-runs-per-student``). Training photos are generated (``testkit.synthetic``)
unless ``--data DIR`` names a real folder.

Each simulated student is a ``requests.Session`` of its own (its own cookie jar, so its own
identity), named ``student-07`` with ``X-Lab-Name``, which opens ``/train`` first as a
browser would. With ``--addresses one`` they all connect from 127.0.0.1 (one school router);
with ``--addresses many`` each from its own loopback address (127.0.0.2, 127.0.0.3, ...:
Linux routes all of 127/8 to loopback, and no proxy is trusted, so the lab sees each one's
own address). After a barrier, in the same second, every student sends
``--runs-per-student`` launches one after another, and one greedy student sends
``--greedy-runs`` launches all at once. Once every accepted run has ended it reports:

- launches: accepted (202) and refused, with each refusal's status and sentence;
- wait, per student and over all runs: from the client's clock just before the POST to
  the run's ``started`` time (when a worker claimed it off the queue; same machine, same
  clock), and to its ``run_started`` event (training began: the worker has imported
  TensorFlow, scanned the photos and built the model);
- makespan: from the first POST to the last ``run_finished`` event;
- first-after-second: how many students' first run was claimed after another student's
  second (or later) run was (0 for a fair queue); "while queued" counts only those whose
  first run was already waiting when that other run was claimed (the lab's doing, not a
  late launch);
- the fixed cost per run: claim → first ``batch`` event plus last ``epoch`` event →
  ``run_finished``. The first part splits into claim → ``run_started`` (the worker scans
  the photos, opens the photo cache, builds the pipeline and the model; a fresh pool
  process also imports TensorFlow first),
  ``run_started`` → epoch 1 begins (its ``epoch`` event's ts minus its ``seconds``) and
  the first step (graph tracing included: it is also counted in epoch 1's seconds); the
  last part is loading the best weights, evaluating the validation photos and saving the
  model and its card. Also the run's wall time (claim → ``run_finished``) minus the
  ``seconds`` of its epochs (validation included), which leaves the first step out, and
  the hand-off gap (a worker's previous run finished → its next run claimed);
- warnings and errors in the parts' logs, and the addresses and identities the lab stored.

Every figure is measured with the workers, the web server and the students all on this
machine, so a run's fixed cost includes waiting for the CPU the others use.

    python bench/classroom.py --students 30 --addresses one
    python bench/classroom.py --students 30 --addresses many --json bench/out/results/classroom.json

Exit status: 0; 1 when the stack cannot start or the runs do not end in ``--timeout``; 3 when
some accepted run did not succeed (the report is still written); 130 on Ctrl-C. Every
process it started is stopped in any case.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import platform
import re
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402

from core.store import FINISHED, RunStore  # noqa: E402
from launcher import processes as stack  # noqa: E402
from testkit.lab_stack import TINY  # noqa: E402
from testkit.synthetic import make_flat_dataset  # noqa: E402

log = logging.getLogger("bench.classroom")


class BenchError(RuntimeError):
    """The bench could not finish; the message says what happened and where to look."""


class SourceAddress(HTTPAdapter):
    """Connections from one local address: a student on a machine of its own."""

    def __init__(self, ip: str, **kw: Any):
        self.ip = ip
        super().__init__(**kw)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs) -> None:
        super().init_poolmanager(connections, maxsize, block, source_address=(self.ip, 0),
                                 **pool_kwargs)


@dataclass
class Launch:
    sent: float  # time.time() just before the POST
    answered: float
    status: int | None  # None: no answer at all
    error: str | None = None  # a refusal's sentence, or why there was no answer
    run_id: str | None = None


@dataclass
class Student:
    name: str
    address: str
    tries: int
    greedy: bool
    session: requests.Session = field(repr=False)
    launches: list[Launch] = field(default_factory=list)


def new_student(url: str, name: str, address: str, tries: int, greedy: bool) -> Student:
    """A browser of its own that has opened the Train page (so it has its identity cookie
    before it launches, as a person's browser does)."""
    session = requests.Session()
    session.trust_env = False  # a loopback lab: never through an HTTP(S)_PROXY
    if address != "127.0.0.1":
        session.mount("http://", SourceAddress(address))
    session.headers["X-Lab-Name"] = name
    page = session.get(url + "/train", timeout=60)
    if page.status_code != 200:
        raise BenchError(f"{name}: GET /train answered {page.status_code}: {page.text[:200]}")
    return Student(name, address, tries, greedy, session)


def post_launch(url: str, student: Student, config: dict[str, Any]) -> Launch:
    sent = time.time()
    try:
        resp = student.session.post(url + "/api/runs", json=config, timeout=120)
    except requests.RequestException as exc:
        return Launch(sent, time.time(), None, f"no answer: {type(exc).__name__}: {exc}")
    answered = time.time()
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code == 202:
        return Launch(sent, answered, 202, run_id=body["id"])
    return Launch(sent, answered, resp.status_code, body.get("error") or resp.text[:200])


def attend(url: str, student: Student, config: dict[str, Any],
           barrier: threading.Barrier) -> None:
    """One student's thread: wait for the whole class, then launch."""
    barrier.wait(timeout=120)
    if student.greedy:  # every launch at once, as a script or a double-clicking hand would
        with ThreadPoolExecutor(max_workers=student.tries) as pool:
            student.launches = list(pool.map(lambda _: post_launch(url, student, config),
                                             range(student.tries)))
    else:
        student.launches = [post_launch(url, student, config) for _ in range(student.tries)]


def wait_until_ended(url: str, monitor: requests.Session, run_ids: list[str],
                     parts: list[stack.Service], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    noted = 0.0
    states: Counter[str] = Counter()
    while True:
        dead = [p for p in parts if not p.alive()]
        if dead:
            raise BenchError("; ".join(f"{p.name} stopped during the bench (exit code "
                                       f"{p.popen.returncode}); its log ends:\n"
                                       f"{p.log_text()[-2000:]}" for p in dead))
        try:
            listed = {r["id"]: r["status"] for r in
                      monitor.get(url + "/api/runs", timeout=60).json()["runs"]}
        except (requests.RequestException, ValueError) as exc:
            log.warning("GET /api/runs failed (%s); asking again", exc)
            listed = None
        if listed is not None:
            missing = [r for r in run_ids if r not in listed]
            if missing:
                raise BenchError(f"accepted runs missing from /api/runs: {missing}")
            states = Counter(listed[r] for r in run_ids)
            if all(s in FINISHED for s in states):
                return
            if time.monotonic() - noted >= 30:
                noted = time.monotonic()
                log.info("runs: %s", ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
        if time.monotonic() > deadline:
            raise BenchError(f"the runs did not all end within {timeout:.0f} s "
                             f"(--timeout); last seen: {dict(states)}")
        time.sleep(1.0)


def fetch_run(url: str, session: requests.Session, run_id: str
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run = session.get(f"{url}/api/runs/{run_id}", timeout=60).json()
    found: list[dict[str, Any]] = []
    while True:
        page = session.get(f"{url}/api/runs/{run_id}/events",
                           params={"after": found[-1]["seq"] if found else 0},
                           timeout=60).json()
        found += page["events"]
        if not page["more"]:
            return run, found


def timeline(student: Student, launch: Launch, run: dict[str, Any],
             evs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's moments (Unix seconds) and the spans the report is made of."""

    def first(kind: str) -> float | None:
        return next((e["ts"] for e in evs if e["type"] == kind), None)

    epochs = [e for e in evs if e["type"] == "epoch"]
    t = {"run_id": run["id"], "student": student.name, "status": run["status"],
         "worker": run["worker"], "error": run["error"], "sent": launch.sent,
         "created": run["created"], "claimed": run["started"],
         "run_started": first("run_started"),
         # An epoch's "seconds" run from Keras's on_epoch_begin to its end, validation in.
         "epoch1_began": epochs[0]["ts"] - epochs[0]["seconds"] if epochs else None,
         "first_batch": first("batch"),
         "last_epoch": epochs[-1]["ts"] if epochs else None, "finished": first("run_finished"),
         "epochs": len(epochs), "epoch_seconds": sum(e["seconds"] for e in epochs),
         "device": next((e.get("device") for e in evs if e["type"] == "run_started"), None)}

    def span(a: str, b: str) -> float | None:
        return t[b] - t[a] if t[a] is not None and t[b] is not None else None

    t.update(wait_claim=span("sent", "claimed"), wait_training=span("sent", "run_started"),
             setup=span("claimed", "first_batch"),
             imports_scan_build=span("claimed", "run_started"),
             fit_start=span("run_started", "epoch1_began"),
             first_step=span("epoch1_began", "first_batch"),
             teardown=span("last_epoch", "finished"), wall=span("claimed", "finished"))
    t["outside_epochs"] = None if t["wall"] is None else t["wall"] - t["epoch_seconds"]
    return t


def handoff_gaps(runs: list[dict[str, Any]]) -> list[float]:
    """Per worker: its previous run's end to its next run's claim."""
    by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if r["claimed"] is not None and r["worker"]:
            by_worker[r["worker"]].append(r)
    gaps = []
    for mine in by_worker.values():
        mine.sort(key=lambda r: r["claimed"])
        gaps += [b["claimed"] - a["finished"] for a, b in zip(mine, mine[1:], strict=False)
                 if a["finished"] is not None]
    return gaps


def fairness(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """First runs claimed after another student's second (or later) run was."""
    mine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        mine[r["student"]].append(r)
    firsts, seconds = {}, []
    for name, rs in mine.items():
        rs.sort(key=lambda r: r["created"])
        firsts[name] = rs[0]
        seconds += rs[1:]
    late, late_while_queued, examples = 0, 0, []
    for name, f in firsts.items():
        if f["claimed"] is None:
            continue
        before = [s for s in seconds if s["student"] != name and s["claimed"] is not None
                  and s["claimed"] < f["claimed"]]
        if before:
            late += 1
            queued = [s for s in before if s["claimed"] > f["created"]]
            late_while_queued += bool(queued)
            if len(examples) < 5:
                other = min(queued or before, key=lambda r: r["claimed"])
                examples.append(f"{name}'s first run claimed "
                                f"{f['claimed'] - other['claimed']:.1f} s after "
                                f"{other['student']}'s later run {other['run_id']}")
    order = [f"{r['student']}#{mine[r['student']].index(r) + 1}"
             for r in sorted((r for r in runs if r["claimed"] is not None),
                             key=lambda r: r["claimed"])]
    return {"first_after_second": late, "first_after_second_while_queued": late_while_queued,
            "examples": examples, "claim_order": order}


PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


def log_problems(parts: list[stack.Service], keep: int = 6) -> dict[str, dict[str, Any]]:
    """Warning and error lines of each part's log: how many, and the first distinct ones."""
    found = {}
    for part in parts:
        lines = [ln.strip() for ln in part.log_text().splitlines() if PROBLEM.search(ln)]
        distinct: list[str] = []
        seen = set()
        for ln in lines:
            # Timestamps and run ids differ on every line; the message is what repeats.
            key = re.sub(r"[0-9a-f]{12}|\d", "#", ln[ln.find(PROBLEM.search(ln).group(0)):])
            if key not in seen:
                seen.add(key)
                distinct.append(ln[:300])
        found[part.name] = {"lines": len(lines), "distinct": len(distinct),
                            "first": distinct[:keep], "log": str(part.log_path)}
    return found


def stats(values: list[float | None]) -> dict[str, float] | None:
    got = [v for v in values if v is not None]
    if not got:
        return None
    return {"n": len(got), "median": round(statistics.median(got), 2),
            "min": round(min(got), 2), "max": round(max(got), 2)}


def shown(s: dict[str, float] | None) -> str:
    return "–" if s is None else f"median {s['median']:.1f} s (min {s['min']:.1f}, " \
                                 f"max {s['max']:.1f}, n {s['n']})"


def build_result(args: argparse.Namespace, students: list[Student], runs: list[dict[str, Any]],
                 stored: dict[str, dict[str, Any]], problems: dict[str, Any],
                 config: dict[str, Any], settings: dict[str, str]) -> dict[str, Any]:
    launches = [lc for s in students for lc in s.launches]
    refusals = Counter((lc.status, lc.error) for lc in launches if lc.status != 202)
    first_sends = [s.launches[0].sent for s in students if s.launches]
    ends = [r["finished"] for r in runs if r["finished"] is not None]
    by_id = {r["run_id"]: r for r in runs}
    per_student = []
    for s in students:
        mine = sorted((by_id[lc.run_id] for lc in s.launches if lc.run_id in by_id),
                      key=lambda r: r["created"])
        per_student.append({
            "name": s.name, "address": s.address, "greedy": s.greedy, "tries": s.tries,
            "accepted": len(mine), "refused": len(s.launches) - len(mine),
            "runs": [r["run_id"] for r in mine],
            "wait_claim_s": [round(r["wait_claim"], 2) if r["wait_claim"] is not None
                             else None for r in mine],
            "wait_training_s": [round(r["wait_training"], 2) if r["wait_training"] is not None
                                else None for r in mine],
            # What the lab stored as this browser's address and identity.
            "lab_addresses": sorted({stored[r["run_id"]]["address"] for r in mine}),
            "lab_owners": sorted({stored[r["run_id"]]["owner"] for r in mine})})
    gaps = handoff_gaps(runs)
    return {
        "bench": "classroom",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "device": next((r["device"] for r in runs if r["device"]), None),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "run_config": config, "lab_settings": settings,
        "launches": {"sent": len(launches), "accepted": sum(lc.status == 202 for lc in launches),
                     "refused": len(launches) - sum(lc.status == 202 for lc in launches),
                     "refusals": [{"status": st, "error": err, "count": n}
                                  for (st, err), n in refusals.most_common()],
                     "first_post_spread_s": round(max(first_sends) - min(first_sends), 3)
                     if first_sends else None,
                     "answer_s": stats([lc.answered - lc.sent for lc in launches])},
        "runs": {"accepted": len(runs), "statuses": dict(Counter(r["status"] for r in runs)),
                 "not_succeeded": [{"run_id": r["run_id"], "student": r["student"],
                                    "status": r["status"], "error": r["error"]}
                                   for r in runs if r["status"] != "succeeded"]},
        "identities": {"students": len(students),
                       "owners": len({stored[r["run_id"]]["owner"] for r in runs}),
                       "addresses": len({stored[r["run_id"]]["address"] for r in runs})},
        "wait_claim_s": stats([r["wait_claim"] for r in runs]),
        "wait_training_s": stats([r["wait_training"] for r in runs]),
        "first_run_wait_claim_s": stats([s["wait_claim_s"][0] for s in per_student
                                         if s["wait_claim_s"]]),
        "makespan_s": round(max(ends) - min(lc.sent for lc in launches), 2) if ends else None,
        "fairness": fairness(runs),
        "fixed_cost_s": {
            "claim_to_first_batch": stats([r["setup"] for r in runs]),
            "claim_to_run_started": stats([r["imports_scan_build"] for r in runs]),
            "run_started_to_epoch_1": stats([r["fit_start"] for r in runs]),
            "first_step": stats([r["first_step"] for r in runs]),
            "last_epoch_to_run_finished": stats([r["teardown"] for r in runs]),
            "per_run": stats([r["setup"] + r["teardown"] for r in runs
                              if r["setup"] is not None and r["teardown"] is not None]),
            "wall_minus_epochs": stats([r["outside_epochs"] for r in runs]),
            "wall": stats([r["wall"] for r in runs]),
            "in_epochs": stats([r["epoch_seconds"] for r in runs]),
            "worker_handoff": stats(gaps)},
        "students": per_student,
        "run_timelines": runs,
        "log_problems": problems,
    }


def report(result: dict[str, Any]) -> str:
    la, fc, fair = result["launches"], result["fixed_cost_s"], result["fairness"]
    a = result["args"]
    out = [f"Classroom: {a['students']} students ({a['addresses']} address"
           f"{'es' if a['addresses'] == 'many' else ''}), {a['workers']} workers, "
           f"{result['machine']} ({json.dumps(result['device'])}), {result['date']}",
           f"  runs: {json.dumps(result['run_config'])}",
           f"launches: {la['sent']} sent (first POSTs within {la['first_post_spread_s']} s), "
           f"{la['accepted']} accepted, {la['refused']} refused; answered in "
           f"{shown(la['answer_s'])}"]
    out += [f"  refused {r['count']} × {r['status']}: {r['error']}" for r in la["refusals"]]
    ids = result["identities"]
    out.append(f"identities the lab stored: {ids['owners']} owners and {ids['addresses']} "
               f"addresses for {ids['students']} students")
    out.append(f"runs ended: {result['runs']['statuses']}")
    out += [f"  NOT SUCCEEDED {r['run_id']} ({r['student']}): {r['status']}: {r['error']}"
            for r in result["runs"]["not_succeeded"]]
    out += [f"wait, POST → claimed by a worker: {shown(result['wait_claim_s'])}",
            f"wait, POST → run_started (training began): {shown(result['wait_training_s'])}",
            f"wait of each student's first run (to claim): "
            f"{shown(result['first_run_wait_claim_s'])}",
            f"makespan (first POST → last run_finished): {result['makespan_s']} s",
            f"first-after-second: {fair['first_after_second']} (of which while queued: "
            f"{fair['first_after_second_while_queued']})"]
    out += [f"  {e}" for e in fair["examples"]]
    out += ["fixed cost per run (claim → first batch + last epoch → run_finished; the "
            "first step, graph tracing included, is in both it and epoch 1's seconds):",
            f"  claim → first batch:            {shown(fc['claim_to_first_batch'])}",
            f"    claim → run_started:          {shown(fc['claim_to_run_started'])}",
            f"    run_started → epoch 1 begins: {shown(fc['run_started_to_epoch_1'])}",
            f"    first step (in epoch 1):      {shown(fc['first_step'])}",
            f"  last epoch → run_finished:      {shown(fc['last_epoch_to_run_finished'])}",
            f"  sum of the two:                 {shown(fc['per_run'])}",
            f"  wall (claim → run_finished):    {shown(fc['wall'])}",
            f"  of which in epochs:             {shown(fc['in_epochs'])}",
            f"  wall − epochs:                  {shown(fc['wall_minus_epochs'])}",
            f"  worker hand-off (end → claim):  {shown(fc['worker_handoff'])}",
            "per student (wait to claim / to run_started, per accepted run in launch order):"]
    for s in result["students"]:
        waits = ", ".join(f"{c:.1f}/{t:.1f}" if c is not None and t is not None else "–"
                          for c, t in zip(s["wait_claim_s"], s["wait_training_s"], strict=True))
        out.append(f"  {s['name']}{' (greedy)' if s['greedy'] else ''} from {s['address']}: "
                   f"{s['accepted']}/{s['tries']} accepted; waits {waits or '–'} s")
    out.append("log warnings and errors:")
    for name, p in result["log_problems"].items():
        out.append(f"  {name}: {p['lines']} lines, {p['distinct']} distinct")
        out += [f"    {line}" for line in p["first"]]
    return "\n".join(out)


def stop_all(parts: list[stack.Service]) -> None:
    """The web server, then the workers together, then redis-server (a worker's warm
    shutdown ends its run at the next batch and records it there: one at a time, a Ctrl-C
    would wait for each in turn)."""
    workers = [p for p in parts if p.name.startswith("celery worker")]
    redis = [p for p in parts if p.name == "redis-server"]
    for part in reversed(parts):
        if part not in workers and part not in redis:
            part.stop(timeout=20)
    if workers:
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            list(pool.map(lambda w: w.stop(timeout=30), workers))
    for part in redis:
        part.stop(timeout=20)


def student_addresses(n: int, mode: str) -> list[str]:
    if mode == "one":
        return ["127.0.0.1"] * n
    first = ipaddress.IPv4Address("127.0.0.2")
    return [str(first + i) for i in range(n)]


def run_class(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.data:
        data = Path(args.data).expanduser().resolve()
        if not data.is_dir():
            raise BenchError(f"--data {args.data}: no such folder")
    else:
        data = make_flat_dataset(work / "data" / "train", per_class=args.per_class)
    redis_port, web_port = stack.free_port(), stack.free_port()
    passcode = secrets.token_hex(8)
    settings = {"LAB_PASSCODE": passcode, "LAB_LOCK_LAUNCH": "0"}
    if args.max_runs_per_student is not None:
        settings["LAB_MAX_RUNS_PER_STUDENT"] = str(args.max_runs_per_student)
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "DATABASE_URL": f"sqlite:///{work / 'lab.sqlite3'}",
           "LAB_DATA_DIR": str(data), "LAB_MODELS_DIR": str(work / "models"),
           "LAB_STATE_DIR": str(work / "state"), **settings}
    config = {**TINY, "recipe": "fast_cnn", "epochs": args.epochs}
    if args.limit:
        config["limit"] = args.limit
    parts: list[stack.Service] = []
    try:
        parts.append(stack.start_redis(redis_port, work / "redis", save=False))
        for i in range(1, args.workers + 1):
            parts.append(stack.start_worker(env, work / f"worker-{i}.log", name=f"class-{i}"))
        parts.append(stack.start_web(env, web_port, work / "web.log"))
        url = f"http://127.0.0.1:{web_port}"
        log.info("lab up at %s: %d worker(s), data %s", url, args.workers, data)

        students = []
        for i, ip in enumerate(student_addresses(args.students, args.addresses)):
            greedy = i == 0 and args.greedy_runs > 0
            students.append(new_student(url, f"student-{i + 1:02d}", ip, args.greedy_runs
                                        if greedy else args.runs_per_student, greedy))
        barrier = threading.Barrier(len(students))
        threads = [threading.Thread(target=attend, args=(url, s, config, barrier),
                                    name=s.name, daemon=True) for s in students]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted = [(s, lc) for s in students for lc in s.launches if lc.run_id]
        log.info("%d launches sent, %d accepted; waiting for every accepted run to end",
                 sum(len(s.launches) for s in students), len(accepted))
        # The instructor watches the class, as a teacher's screen would.
        instructor = requests.Session()
        instructor.trust_env = False
        instructor.headers["X-Lab-Passcode"] = passcode
        wait_until_ended(url, instructor, [lc.run_id for _, lc in accepted], parts,
                         args.timeout)
        runs = [timeline(s, lc, *fetch_run(url, instructor, lc.run_id)) for s, lc in accepted]
        # The API hides a run's address and owner; the bench reads them from the run store to
        # check that the lab told the students apart as it should.
        store = RunStore(env["DATABASE_URL"])
        stored = {}
        for _, lc in accepted:
            row = store.get_run(lc.run_id) or {}
            stored[lc.run_id] = {"address": (row.get("launched_from") or "?").split("/")[0],
                                 "owner": row.get("owner")}
        store.engine.dispose()
        return build_result(args, students, runs, stored, log_problems(parts), config,
                            {k: v for k, v in settings.items() if k != "LAB_PASSCODE"})
    finally:
        # A second Ctrl-C must not leave half the lab running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log.info("stopping the lab's processes")
        stop_all(parts)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--addresses", choices=("one", "many"), default="one",
                        help="all students from 127.0.0.1, or each from its own 127.0.0.x")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs-per-student", type=int, default=2)
    parser.add_argument("--greedy-runs", type=int, default=6,
                        help="launches student-01 sends at once (0: nobody is greedy)")
    parser.add_argument("--max-runs-per-student", type=int, default=None,
                        help="LAB_MAX_RUNS_PER_STUDENT (default: the lab's own, 2)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="photos each run uses")
    parser.add_argument("--data", help="a photo folder (default: generated photos)")
    parser.add_argument("--per-class", type=int, default=24, help="generated photos per class")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds to wait for every run to end")
    parser.add_argument("--workdir", help="keep the lab's files and logs here (default: a "
                                          "temporary folder, removed afterwards)")
    parser.add_argument("--json", help="write the figures to this file too")
    args = parser.parse_args()
    if args.students < 1 or args.workers < 1:
        parser.error("--students and --workers must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # A SIGTERM (a job runner stopping the bench) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.workdir:
            work = Path(args.workdir).resolve()
            work.mkdir(parents=True, exist_ok=True)
            result = run_class(args, work)
        else:
            with tempfile.TemporaryDirectory(prefix="lab-classroom-") as tmp:
                result = run_class(args, Path(tmp))
    except (stack.StackError, BenchError) as exc:
        log.error("classroom bench failed: %s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted; every process the bench started has been stopped")
        return 130
    print(report(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        log.info("figures written to %s", path)
    if result["runs"]["not_succeeded"]:
        log.error("%d accepted run(s) did not succeed (see above)",
                  len(result["runs"]["not_succeeded"]))
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
