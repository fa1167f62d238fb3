"""The Ray executor: each unit of a sweep is one Ray task, on a local Ray instance or a cluster.

A task gets the model's name (each worker process loads it once and keeps it for later units), the
sweep's settings and benchmark items, and the files the unit reads (the shared work of its seed,
put in Ray's object store once per seed, and the unit's own finished stages); it runs the unit with
the same code as the local executor in a scratch folder and returns the files it made. Workers need
weightsteer installed and the model reachable by its name (a hub id, the embedded model, or a path
that exists on every node); they need no shared filesystem.

Faults: a worker that dies (killed, out of memory) is retried up to max_retries times by Ray; a
unit that still fails comes back as a failed UnitResult. Ctrl-C cancels every task not finished.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import WeightsteerError
from .files import changes, pack, unpack

INSTALL = 'pip install "weightsteer[ray]"'
_LOADED: dict[tuple[str, str], tuple] = {}  # (model name, matmul dtype) -> (model, tokenizer), per worker process


def require_ray():
    try:
        import ray
    except ImportError:
        raise WeightsteerError(f"the ray executor needs Ray, which is not installed: {INSTALL}") from None
    return ray


def worker_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # Ray forwards a worker's stderr to the driver


def run_unit_task(model_name: str, matmul_dtype: str, settings, items: dict, unit, shared: dict[str, bytes],
                  own: dict[str, bytes]):
    """The task: the unit in a scratch copy of the run folder; its UnitResult with the files it made."""
    from ..models import load_model
    from ..sweep import UnitWork

    if (model_name, matmul_dtype) not in _LOADED:
        _LOADED[model_name, matmul_dtype] = load_model(model_name, matmul_dtype=matmul_dtype)
    model, tokenizer = _LOADED[model_name, matmul_dtype]
    scratch = Path(tempfile.mkdtemp(prefix="weightsteer-unit-"))
    try:
        before = {**shared, **own}
        unpack(scratch, before)
        result = UnitWork(model, tokenizer, settings, items, scratch, worker_log).run(unit)
        result.files, result.removed = changes(scratch, before)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def default_gpus() -> float:
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def release_gpu(model) -> None:
    """The units run on workers: the driver's copy of the model (kept for its shared work) leaves the
    GPU, so that a one-GPU machine can run a unit beside the driver."""
    import torch

    if next(model.parameters()).is_cuda:
        model.to("cpu")
        torch.cuda.empty_cache()


class RayExecutor:
    def __init__(self, model_name: str, *, matmul_dtype: str = "float32", address: str | None = None,
                 gpus_per_task: float | None = None, cpus_per_task: float = 1.0, max_retries: int = 2, log=print):
        self.ray = require_ray()
        self.model_name, self.matmul_dtype, self.address, self.log = model_name, matmul_dtype, address, log
        self.gpus = default_gpus() if gpus_per_task is None else gpus_per_task
        self.cpus, self.max_retries = cpus_per_task, max_retries
        self.connect()  # before the model loads: a wrong address is found out at once

    def connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # a caller (or a test) connected already
            return
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=True)
            else:
                ray.init(include_dashboard=False, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at '{self.address}'" if self.address else "a local Ray instance"
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise WeightsteerError(f"could not start or join {where}: {first}; check --address (a running "
                                   "cluster's 'auto' or ray://HEAD:10001) or leave it out") from None
        self.log(f"[ray] {ray.cluster_resources()}")

    def run(self, work, units, submitted, finished) -> None:
        from ..sweep import UnitResult

        ray = self.ray
        release_gpu(work.model)
        threads = max(1, int(self.cpus))
        task = ray.remote(run_unit_task).options(
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries, retry_exceptions=False,
            runtime_env={"env_vars": {"TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads)}})
        settings, items = ray.put(work.s), ray.put(work.items)
        shared = {seed: ray.put(pack(work.out_root, work.shared_inputs(seed))) for seed in {u.seed for u in units}}
        pending = {}
        for unit in units:
            own = pack(work.out_root, [work.folder(unit.seed) / unit.method])
            ref = task.remote(self.model_name, self.matmul_dtype, settings, items, unit, shared[unit.seed], own)
            pending[ref] = unit
            self.log(f"[ray] submitted {unit}")
        submitted(len(pending))
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    unit = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as err:  # the worker died more often than max_retries
                        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
                        result = UnitResult(unit, False, 0.0, f"{type(err).__name__}: {first}", str(err)[-2000:])
                    finished(result)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            self.log(f"[ray] cancelled {len(pending)} unfinished units")
            raise
