"""Running the jobs: in this process, or in one spawned worker process per device.

Each worker process is bound to one device for its whole life (:func:`bind_device` runs once in
it) and every job sent to it carries that device in its :class:`JobSpec`, so a job always runs on
the device its process is bound to. A job that raises is reported and the grid goes on; a worker
that dies (killed, out of memory) stops the grid, with the finished jobs saved.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import ExitStack

import torch
from tqdm import tqdm  # plain text bar: works in a terminal, a log file and a notebook

from cutpaste_lib import config
from cutpaste_lib.errors import CutPasteError
from cutpaste_lib.reproduce.grid import JobFn, JobSpec

Outcome = tuple[dict | None, str | None, float, str]
"""What a job gave: its result or ``None``, its error message or ``None``, seconds, device."""
OnDone = Callable[[JobSpec, dict, float, str], None]


def plan_workers(device: str | None, workers: int | None) -> list[str]:
    """Devices of the worker processes: one per visible GPU, or ``[device]`` to run in-process.

    ``device`` "auto"/None/"cuda" with several GPUs gives ``cuda:0 .. cuda:k-1`` (``workers`` caps
    k); an explicit ``cuda:N`` or ``cpu`` gives one in-process worker unless ``workers`` asks for
    more (CPU processes share the cores).
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    dev = config.resolve_device(device)
    n_gpu = torch.cuda.device_count() if dev.type == "cuda" else 0
    if dev.type == "cuda" and dev.index is None and n_gpu > 1:
        k = n_gpu if workers is None else min(workers, n_gpu)
        return [f"cuda:{i}" for i in range(k)]
    return [str(dev)] * (workers or 1)


def bind_device(device: str, n_workers: int) -> None:
    """Runs once in each worker process: bind it to ``device``; CPU workers share the cores."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    else:  # n processes x all-core thread pools would oversubscribe the CPU
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))


def run_one(job: JobFn, spec: JobSpec) -> Outcome:
    """Run a job, turning an exception into a message (the grid goes on with the other jobs)."""
    start = time.perf_counter()
    try:
        result = job(spec)
    except Exception as exc:  # noqa: BLE001 - reported per job, the grid continues
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return None, last, time.perf_counter() - start, spec.device
    return result, None, time.perf_counter() - start, spec.device


class _Tally:
    """Counts finished jobs, hands successes to ``on_done``, keeps failures, drives the bar."""

    def __init__(self, on_done: OnDone, *, todo: int, total: int, initial: int, progress: bool):
        self.on_done = on_done
        self.todo = todo
        self.failures: list[tuple[str, str]] = []
        self.finished = 0
        self.start = time.perf_counter()
        self.bar = tqdm(
            total=total,
            initial=initial,
            unit="job",
            desc="reproduce grid",
            disable=not progress,
            dynamic_ncols=True,
        )

    def record(self, spec: JobSpec, outcome: Outcome) -> None:
        result, error, seconds, dev = outcome
        if error is None:
            try:
                self.on_done(spec, result, seconds, dev)
            except CutPasteError as exc:
                error = str(exc)
        if error is not None:
            self.failures.append((spec.job.key, error))
        self.finished += 1
        self.bar.update(1)
        per_job = (time.perf_counter() - self.start) / self.finished  # wall time, all workers
        eta = _dt.datetime.now() + _dt.timedelta(seconds=per_job * (self.todo - self.finished))
        self.bar.set_postfix_str(
            f"{per_job:.1f} s/job, finish ~{eta:%a %H:%M}, failed {len(self.failures)}"
        )


def execute(
    specs: Sequence[JobSpec],
    *,
    job: JobFn,
    devices: Sequence[str],
    on_done: OnDone,
    total: int,
    initial: int,
    progress: bool,
) -> list[tuple[str, str]]:
    """Run every spec on ``devices`` (in-process when there is one); return ``(key, error)`` pairs."""
    tally = _Tally(on_done, todo=len(specs), total=total, initial=initial, progress=progress)
    try:
        if len(devices) == 1:
            for spec in specs:
                spec = dataclasses.replace(spec, device=devices[0])
                tally.record(spec, run_one(job, spec))
        elif specs:
            _execute_in_workers(specs, job, devices, tally.record)
    finally:
        tally.bar.close()
    return tally.failures


def _execute_in_workers(
    specs: Sequence[JobSpec],
    job: JobFn,
    devices: Sequence[str],
    record: Callable[[JobSpec, Outcome], None],
) -> None:
    """One single-process pool per device; each takes the next job as soon as it is free."""
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    todo = deque(specs)
    running: dict[Future, tuple[int, JobSpec]] = {}
    with ExitStack() as stack:
        pools = [
            stack.enter_context(
                ProcessPoolExecutor(
                    1, mp_context=ctx, initializer=bind_device, initargs=(d, len(devices))
                )
            )
            for d in devices
        ]

        def send_next(worker: int) -> None:
            if todo:
                spec = dataclasses.replace(todo.popleft(), device=devices[worker])
                running[pools[worker].submit(run_one, job, spec)] = (worker, spec)

        try:
            for worker in range(len(pools)):
                send_next(worker)
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    worker, spec = running.pop(fut)
                    try:
                        outcome = fut.result()
                    except Exception as exc:  # a worker died (killed, out of memory)
                        raise CutPasteError(
                            f"a worker process died ({type(exc).__name__}: {exc}); finished "
                            "jobs are saved, rerun to resume"
                        ) from exc
                    record(spec, outcome)
                    send_next(worker)
        except BaseException:
            for pool in pools:
                pool.shutdown(wait=False, cancel_futures=True)
            raise
