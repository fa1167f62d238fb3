"""`weightsteer sweep`, `weightsteer report` and `weightsteer headroom`."""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from pathlib import Path

from ..errors import WeightsteerError
from ..executors import EXECUTORS
from . import add_matmul_dtype, add_model, count, log, tolerance
from .run import (
    add_cost_args,
    add_direction_args,
    add_eval_args,
    add_max_think,
    behaviour_from,
    benchmarks_from,
    check_tokenizer,
    cost_settings_from,
    data_dirs_from,
    ia3_overrides,
    seeds_from,
    settings_from,
)


def make_executor(args):
    """The executor of --executor, checked (and Ray imported) before the model loads."""
    from ..executors import LocalExecutor

    if args.executor == "local":
        for flag in ("address", "gpus_per_task", "cpus_per_task"):
            if getattr(args, flag) is not None:
                raise WeightsteerError(f"--{flag.replace('_', '-')} is for the ray executor: add --executor ray")
        return LocalExecutor(log)
    from ..executors.ray import RayExecutor

    for flag in ("gpus_per_task", "cpus_per_task"):
        if getattr(args, flag) is not None and not getattr(args, flag) >= 0:
            raise WeightsteerError(f"--{flag.replace('_', '-')} must be a number of at least 0")
    if args.max_retries < 0:
        raise WeightsteerError("--max-retries must be at least 0")
    return RayExecutor(args.model, matmul_dtype=args.matmul_dtype, address=args.address,
                       gpus_per_task=args.gpus_per_task,
                       cpus_per_task=1.0 if args.cpus_per_task is None else args.cpus_per_task,
                       max_retries=args.max_retries, log=log)


def cmd_sweep(args) -> None:
    from ..doses import parse_doses
    from ..locks import folder_lock
    from ..models import load_model
    from ..pipeline import behaviour_dir
    from ..presets import defaults
    from ..sweep import SweepSettings, parse_methods
    from ..sweep_driver import SweepDriver

    methods = parse_methods(args.methods)
    data, train = settings_from(args)
    seeds = seeds_from(args)
    doses = parse_doses(args.target_kl)
    behaviour = behaviour_from(args)
    benches = benchmarks_from(args, behaviour)  # every benchmark's data read and checked up front
    pos_only = tuple(b.strip() for b in args.pos_only.split(",") if b.strip())
    unknown = sorted(set(pos_only) - {b.name for b, _ in benches})
    if unknown:
        raise WeightsteerError(f"--pos-only names {', '.join(unknown)}, which this sweep does not score: choose from "
                               f"{', '.join(b.name for b, _ in benches)}")
    settings = SweepSettings(behaviour, methods, tuple(b for b, _ in benches), doses, args.tol, args.limit,
                             data_dirs_from(args), pos_only=pos_only,
                             n_calibration=args.n_calibration, data=data,
                             train={k: getattr(train, k) for k in ("steps", "rank", "lr", "layer_span", "batch_size",
                                                                   "grad_accum", "weight_decay", "warmup_steps",
                                                                   "schedule", "max_length", "oft_block")},
                             activation_scale=args.activation_scale, preset=args.preset,
                             method_train={"ia3": ia3_overrides(args)}, cost=cost_settings_from(args),
                             preset_used={k: getattr(args, k) for k in defaults(args.preset)} if args.preset else {},
                             seeds=seeds)
    executor = make_executor(args)  # Ray imported and joined (or started) before the model loads
    started = time.time()
    model, tokenizer = load_model(args.model, matmul_dtype=args.matmul_dtype)
    check_tokenizer(tokenizer, benches)
    items = {b.name: bench_items for b, bench_items in benches}
    with contextlib.ExitStack() as locks:  # every seed folder this sweep writes
        for seed in seeds:
            locks.enter_context(folder_lock(behaviour_dir(Path(args.out), model, behaviour, seed)))
        status = SweepDriver(model, tokenizer, settings, items, Path(args.out), log).run(executor)
    failed = [u for u, entry in status.items() if not entry.get("ok")]
    log(f"sweep finished in {time.time() - started:.0f} s: {len(status) - len(failed)} of {len(status)} units ok"
        + (f", failed: {', '.join(map(str, failed))}" if failed else ""))
    for u in failed:  # each cause on its own line, so the final error can stay one line
        log(f"  {u}: {status[u].get('error', 'no result recorded')}")
    if failed and len(failed) == len(status):
        causes = {status[u].get("error", "no result recorded") for u in failed}
        cause = f": {causes.pop()}" if len(causes) == 1 else " (causes listed above)"
        raise WeightsteerError(f"every unit failed{cause}; details in sweep.json")


def cmd_report(args) -> None:
    from ..behaviours import load_behaviour
    from ..report import build_report

    command = "weightsteer " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    label = args.model.rstrip("/").split("/")[-1]
    for spec in args.behavior.split(","):
        out = build_report(Path(args.out), label, load_behaviour(spec.strip()).name, Path(args.to) / label, command)
        print(f"wrote {out}")


def cmd_headroom(args) -> None:
    from ..behaviours import load_behaviour
    from ..evals import with_max_think
    from ..headroom import headroom_verdict
    from ..models import load_model
    from ..report import ci
    from ..results import References

    behaviours = [load_behaviour(spec.strip()) for spec in args.behavior.split(",")]
    behaviours = [b.with_probe(with_max_think(b.probe, args.max_think)) if b.probe is not None else b
                  for b in behaviours]
    dirs = data_dirs_from(args)
    items = {b.name: b.probe.load(dirs.get(b.probe.name), args.limit) for b in behaviours if b.probe is not None}
    model, tokenizer = load_model(args.model, matmul_dtype=args.matmul_dtype)
    check_tokenizer(tokenizer, [(b.probe, None) for b in behaviours if b.probe is not None])
    print("| behaviour | probe | POS - NEG persona prompt [95% CI] | verdict |\n|---|---|---|---|")
    for b in behaviours:
        if b.probe is None:
            print(f"| {b.name} | none | n/a | no probe: add a [probe] table to {b.source} |", flush=True)
            continue
        summary = References(model, tokenizer, args.out, b, log=log).headroom(b.probe, items[b.name])
        stat = b.probe.stat(summary, shift=True) if summary else None
        print(f"| {b.name} | {b.probe.describe()} | {ci(stat, '+.3f')} | {headroom_verdict(stat).split(':')[0]} |",
              flush=True)


def register(sub) -> None:
    from ..adapters import METHODS as WEIGHT_METHODS
    from ..baselines.activation import OWN_METHODS, REFERENCE_METHODS, SCALES
    from ..behaviours import builtin_names
    from ..presets import PRESETS
    from ..sweep import PROMPT_METHODS

    p = sub.add_parser("sweep", help="every method for a behaviour: build, calibrate to each KL dose, evaluate")
    add_model(p)
    add_matmul_dtype(p)
    add_direction_args(p)
    add_eval_args(p, evals_default="sycophancy",
                  evals_help="benchmarks scored beside the behaviour's probe: a comma list of tinymfv, airisk "
                             "or a built-in behaviour's probe (default sycophancy; '' for the probe alone)")
    p.add_argument("--methods", default="all",
                   help="comma list of methods, or all / weight / activation / prompting. Weight: "
                        f"{', '.join(WEIGHT_METHODS)}. Activation, the reference's: {', '.join(REFERENCE_METHODS)}; "
                        f"weightsteer's own: {', '.join(OWN_METHODS)}. Prompting: {', '.join(PROMPT_METHODS)}")
    p.add_argument("--target-kl", default="1", help="the dose: kl_p95 in nats, or a comma list of doses (default 1)")
    p.add_argument("--tol", type=tolerance, default=0.05, help="relative tolerance on kl_p95 (default 0.05)")
    p.add_argument("--pos-only", default="", help="benchmarks to score at +C only, e.g. tinymfv (halves their cost)")
    p.add_argument("--n-calibration", type=count, default=None, help="calibration prompts (default: all 40)")
    p.add_argument("--activation-scale", default="median_norm", choices=SCALES,
                   help="activation vectors: unit (the reference: the same unit vector at every layer) or "
                        "median_norm (times each layer's median residual norm; default)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="seed: the seed's configuration for Qwen3-0.6B (model, trad_care personas, layers, dose, "
                        "tiny-mfv thinking, adapter training; docs/presets.md); options given explicitly win")
    add_cost_args(p)
    p.add_argument("--executor", default="local", choices=EXECUTORS,
                   help="local: every unit in this process (default); ray: each unit a Ray task (docs/distributed.md)")
    p.add_argument("--address", default=None,
                   help="ray: the cluster to join ('auto', or ray://host:10001); default: start a local Ray instance")
    p.add_argument("--gpus-per-task", type=float, default=None, help="ray: GPUs per unit (default 1 with CUDA, else 0)")
    p.add_argument("--cpus-per-task", type=float, default=None, help="ray: CPUs per unit (default 1)")
    p.add_argument("--max-retries", type=int, default=2, help="ray: retries of a unit whose worker died (default 2)")
    p.set_defaults(func=cmd_sweep, command_parser=p)

    p = sub.add_parser("headroom", help="how far each behaviour's probe moves under the POS vs NEG persona prompt")
    add_model(p)
    add_matmul_dtype(p)
    p.add_argument("--behavior", "--behaviour", dest="behavior", default=",".join(builtin_names()),
                   help="a comma list of built-in behaviours or behaviour files (default: every built-in)")
    p.add_argument("--out", default="out")
    p.add_argument("--limit", type=count, default=None, help="a seeded, stratified sample of N probe items")
    p.add_argument("--tinymfv-dir", default=None, help="local copy of tiny-mfv (default: the hub)")
    add_max_think(p)
    p.set_defaults(func=cmd_headroom, airisk_dir=None, mmlu_dir=None)

    p = sub.add_parser("report", help="markdown tables and plots from saved sweep summaries")
    add_model(p)
    p.add_argument("--behavior", "--behaviour", dest="behavior", default="trad_care",
                   help="one behaviour (name or file) or a comma list")
    p.add_argument("--out", default="out", help="root of the run folders (default: out)")
    p.add_argument("--to", default="docs/report", help="report folder (default: docs/report)")
    p.set_defaults(func=cmd_report)
