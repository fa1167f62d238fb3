"""`weightsteer run` and `weightsteer smoke`: build a direction and show what it does."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import WeightsteerError
from . import add_model, log

DATA_DIR_FLAGS = {"tinymfv": "--tinymfv-dir", "airisk": "--airisk-dir"}
N_RUN_CALIBRATION = 20  # calibration prompts for `run` (a sweep uses all of the behaviour's)


def add_direction_args(p, *, default_method="lora"):
    from ..adapters import METHODS

    p.add_argument("--behavior", "--behaviour", dest="behavior", default="honesty",
                   help="a built-in behaviour (weightsteer behaviours lists them) or a behaviour file (.toml)")
    p.add_argument("--data", default=None,
                   help="contrastive data (JSONL of {prompt, pos, neg} or {side, prompt, response} rows, or a hub "
                        "dataset id) to train on instead of sampling under the personas")
    p.add_argument("--data-split", default=None, help="split of a hub dataset given as --data (default train)")
    p.add_argument("--adapter", default=default_method, choices=METHODS)
    p.add_argument("--out", default="out", help="root of the run folders (default: out)")
    p.add_argument("--n-personas", type=int, default=1, help="persona pairs to use (default 1)")
    p.add_argument("--n-samples", type=int, default=80, help="responses per side (default 80)")
    p.add_argument("--n-questions", type=int, default=40, help="distinct training questions (default 40)")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per adapter (default 30)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=None, help="default: per adapter type, see README")
    p.add_argument("--layers", default="0.25-0.75", help="span of depth to adapt (default 0.25-0.75)")
    p.add_argument("--seeds", "--seed", dest="seeds", default="0",
                   help="a seed, or a comma list such as 0,1,2: each seed samples its own data and trains its own "
                        "adapters, in out/<model>/<behaviour>-seed<s>/ (seed 0: out/<model>/<behaviour>/)")


def add_eval_args(p, *, evals_default: str, evals_help: str):
    p.add_argument("--evals", default=evals_default, help=evals_help)
    p.add_argument("--limit", type=int, default=None,
                   help="a seeded sample of N items of each probe and benchmark, stratified by its groups "
                        "(tiny-mfv foundations, yes/no answers...), for a quick look")
    for bench, flag in DATA_DIR_FLAGS.items():
        p.add_argument(flag, default=None, help=f"local copy of {bench}'s data (default: the hub)")


def data_dirs_from(args) -> dict:
    return {bench: getattr(args, flag[2:].replace("-", "_")) for bench, flag in DATA_DIR_FLAGS.items()
            if getattr(args, flag[2:].replace("-", "_"))}


def seeds_from(args) -> tuple[int, ...]:
    try:
        seeds = tuple(dict.fromkeys(int(part) for part in str(args.seeds).split(",") if part.strip()))
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0:
        raise WeightsteerError(f"--seeds takes non-negative integers, one or a comma list such as 0,1,2; "
                               f"got {args.seeds!r}")
    return seeds


def settings_from(args):
    """(data settings, train config) of the first seed; replace(..., seed=s) gives any other's."""
    from ..adapters import middle_layers
    from ..pipeline import DataSettings
    from ..train import TrainConfig

    try:
        lo, hi = (float(x) for x in args.layers.split("-"))
    except ValueError:
        raise WeightsteerError(f"--layers must look like 0.25-0.75, got {args.layers!r}") from None
    middle_layers(4, (lo, hi))  # the span's own check, before any work
    for name in ("n_personas", "n_samples", "n_questions", "max_new_tokens", "steps", "rank"):
        if getattr(args, name) < 1:
            raise WeightsteerError(f"--{name.replace('_', '-')} must be at least 1")
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise WeightsteerError(f"--limit must be at least 1, got {args.limit}")
    seed = seeds_from(args)[0]
    data = DataSettings(n_personas=args.n_personas, n_samples=args.n_samples, n_questions=args.n_questions,
                        max_new_tokens=args.max_new_tokens, seed=seed)
    train = TrainConfig(method=args.adapter, rank=args.rank, lr=args.lr, steps=args.steps,
                        layer_span=(lo, hi), seed=seed)
    return data, train


def behaviour_from(args):
    """The behaviour of --behavior, with --data in place of generation; checked before any work."""
    from ..behaviours import load_behaviour
    from ..contrast_data import read_contrast_data

    behaviour = load_behaviour(args.behavior)
    if args.data:
        behaviour = behaviour.with_data(args.data, args.data_split)
    if behaviour.data is not None:
        read_contrast_data(behaviour.data, behaviour.data_split)  # every row checked before the model loads
    else:
        behaviour.persona_prompts(args.n_personas)
    return behaviour


def benchmarks_from(args, behaviour) -> list:
    """(benchmark, items) of the behaviour's probe and --evals, items loaded (and checked) up front."""
    from ..evals import benchmark
    from ..sweep import sweep_benchmarks

    others = [benchmark(name.strip()) for name in args.evals.split(",") if name.strip()]
    dirs = data_dirs_from(args)
    return [(b, b.load(dirs.get(b.name), args.limit)) for b in sweep_benchmarks(behaviour, others)]


def check_tokenizer(tokenizer, benches) -> None:
    for bench, _ in benches:
        if hasattr(bench, "check"):
            bench.check(tokenizer)


def cmd_run(args) -> None:
    from dataclasses import replace

    from ..across_seeds import showcase_spread
    from ..doses import calibrate_dose, parse_doses
    from ..methods import WeightSteering
    from ..models import load_model
    from ..pipeline import build_direction
    from ..results import References
    from ..showcase import showcase
    from ..stages import file_hash

    data, train = settings_from(args)
    seeds = seeds_from(args)
    doses = parse_doses(args.target_kl) if args.target_kl is not None else ()
    behaviour = behaviour_from(args)
    benches = benchmarks_from(args, behaviour)
    started = time.time()
    model, tokenizer = load_model(args.model)
    check_tokenizer(tokenizer, benches)
    refs = References(model, tokenizer, args.out, behaviour, log=log)
    results = {}
    for seed in seeds:  # each seed: its own data, adapters and calibration, in its own folder
        run, delta = build_direction(model, tokenizer, behaviour, args.adapter, Path(args.out),
                                     replace(data, seed=seed), replace(train, seed=seed), log)
        log(f"[delta] {delta} in {run / 'delta.safetensors'}")
        source = file_hash(run / "delta.safetensors")
        alphas, kls = (-1.0, 0.0, 1.0), None
        if doses:
            method = WeightSteering(delta.meta.get("method", "weight"), delta=delta)
            prompts = behaviour.calibration[:N_RUN_CALIBRATION]
            cals = [calibrate_dose(model, tokenizer, method, source, prompts, run, dose, log=log) for dose in doses]
            points = sorted([(c[side].coef, c[side].kl) for c in cals for side in ("pos", "neg")] + [(0.0, 0.0)])
            alphas, kls = tuple(a for a, _ in points), tuple(k for _, k in points)
        if len(seeds) > 1:
            print(f"\n#### seed {seed}")
        results[seed] = showcase(model, tokenizer, delta, behaviour, refs, run, source, benches=benches,
                                 alphas=alphas, kls=kls, log=print)
        log(f"seed {seed} done; run folder {run}")
    if len(seeds) > 1:
        print("\n".join(showcase_spread(results)))
    log(f"done in {time.time() - started:.0f} s")


def cmd_smoke(args) -> None:
    import tempfile

    from ..behaviours import load_behaviour
    from ..pipeline import DataSettings, build_direction
    from ..results import References
    from ..showcase import showcase
    from ..stages import file_hash
    from ..tiny import embedded_tokenizer, tiny_model
    from ..train import TrainConfig

    started = time.time()
    model, tokenizer = tiny_model("llama", embedded_tokenizer())
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="weightsteer-smoke-"))
    behaviour = load_behaviour("honesty")
    data = DataSettings(n_samples=8, n_questions=4, max_new_tokens=12, batch_size=8)
    train = TrainConfig(method=args.adapter, steps=3, lr=1e-2)
    run, delta = build_direction(model, tokenizer, behaviour, args.adapter, out, data, train, log)
    refs = References(model, tokenizer, out, behaviour, log=log)
    showcase(model, tokenizer, delta, behaviour, refs, run, file_hash(run / "delta.safetensors"),
             benches=[(behaviour.probe, behaviour.probe.load())], answer_tokens=8, log=print)
    log(f"smoke test passed in {time.time() - started:.0f} s; run folder {run}")


def register(sub) -> None:
    from ..adapters import METHODS

    p = sub.add_parser("run", help="generate data, train pos/neg adapters, take dW, show before/after")
    add_model(p)
    add_direction_args(p)
    add_eval_args(p, evals_default="", evals_help="benchmarks to show beside the behaviour's probe, e.g. "
                                                  "sycophancy (a comma list; default none)")
    p.add_argument("--target-kl", default=None,
                   help="also calibrate alpha to this kl_p95 in nats (or to each of a comma list of doses) "
                        "and show the calibrated alphas")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("smoke", help="the run pipeline on a tiny random model (about a minute)")
    p.add_argument("--adapter", default="lora", choices=METHODS)
    p.add_argument("--out", default=None, help="run folder root (default: a new temporary folder)")
    p.set_defaults(func=cmd_smoke)
