"""`weightsteer run` and `weightsteer smoke`: build a direction and show what it does."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import WeightsteerError
from . import add_matmul_dtype, add_model, count, log, non_negative_number, positive_number, whole

DATA_DIR_FLAGS = {"tinymfv": "--tinymfv-dir", "airisk": "--airisk-dir", "mmlu": "--mmlu-dir"}
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
    p.add_argument("--n-personas", type=count, default=1, help="persona pairs to use (default 1)")
    p.add_argument("--n-samples", type=count, default=80, help="responses per side (default 80)")
    p.add_argument("--n-questions", type=count, default=40, help="distinct training questions (default 40)")
    p.add_argument("--max-new-tokens", type=count, default=96)
    p.add_argument("--steps", type=count, default=30, help="optimizer steps per adapter (default 30)")
    p.add_argument("--rank", type=count, default=8)
    p.add_argument("--lr", type=positive_number, default=None, help="default: per adapter type, see README")
    p.add_argument("--layers", default="0.25-0.75", help="span of depth to adapt (default 0.25-0.75)")
    p.add_argument("--train-batch-size", type=count, default=4, help="rows per micro-batch (default 4)")
    p.add_argument("--grad-accum", type=count, default=1, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--weight-decay", type=non_negative_number, default=0.0, help="AdamW weight decay (default 0)")
    p.add_argument("--warmup-steps", type=whole, default=0, help="linear learning-rate warmup (default 0)")
    p.add_argument("--lr-schedule", default="constant", choices=("constant", "linear"),
                   help="after warmup: constant (default) or linear decay to 0")
    p.add_argument("--max-length", type=count, default=256, help="training tokens per row (default 256)")
    p.add_argument("--ia3-modules", default="",
                   help="IA3 only: comma list of modules to adapt instead of the seven linear ones (the seed's: "
                        "k_proj,v_proj,down_proj); down_proj is scaled on its input side")
    p.add_argument("--ia3-layers", default="", help="IA3 only: span of depth instead of --layers, e.g. 0-1")
    p.add_argument("--oft-block-size", type=whole, default=0,
                   help="OFT's block size (default 0: the largest of 32/16/8/4/2 that divides every input width)")
    p.add_argument("--seeds", "--seed", dest="seeds", default="0",
                   help="a seed, or a comma list such as 0,1,2: each seed samples its own data and trains its own "
                        "adapters, in out/<model>/<behaviour>-seed<s>/ (seed 0: out/<model>/<behaviour>/)")


def add_max_think(p):
    p.add_argument("--max-think", type=whole, default=0,
                   help="tiny-mfv only: think for up to N tokens before the JSON answer (guided rollout, "
                        "as the seed's tables with 64); default 0, a single forward pass")


def add_eval_args(p, *, evals_default: str, evals_help: str):
    p.add_argument("--evals", default=evals_default, help=evals_help)
    add_max_think(p)
    p.add_argument("--limit", type=count, default=None,
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


def parse_span(flag: str, text: str) -> tuple[float, float]:
    from ..adapters import middle_layers

    try:
        lo, hi = (float(x) for x in text.split("-"))
    except ValueError:
        raise WeightsteerError(f"{flag} must look like 0.25-0.75, got {text!r}") from None
    middle_layers(4, (lo, hi))  # the span's own check, before any work
    return lo, hi


def ia3_overrides(args) -> dict:
    """TrainConfig fields that --ia3-modules and --ia3-layers change for IA3 alone."""
    overrides = {}
    if args.ia3_modules:
        overrides["modules"] = tuple(m.strip() for m in args.ia3_modules.split(",") if m.strip())
    if args.ia3_layers:
        overrides["layer_span"] = parse_span("--ia3-layers", args.ia3_layers)
    return overrides


def settings_from(args):
    from dataclasses import replace

    from ..pipeline import DataSettings
    from ..train import TrainConfig

    lo, hi = parse_span("--layers", args.layers)
    seed = seeds_from(args)[0]  # the first seed's settings; replace(..., seed=s) gives any other's
    data = DataSettings(n_personas=args.n_personas, n_samples=args.n_samples, n_questions=args.n_questions,
                        max_new_tokens=args.max_new_tokens, seed=seed)
    train = TrainConfig(method=args.adapter, rank=args.rank, lr=args.lr, steps=args.steps,
                        layer_span=(lo, hi), seed=seed, batch_size=args.train_batch_size,
                        grad_accum=args.grad_accum, weight_decay=args.weight_decay,
                        warmup_steps=args.warmup_steps, schedule=args.lr_schedule, max_length=args.max_length,
                        oft_block=args.oft_block_size)
    if args.adapter == "ia3":
        train = replace(train, **ia3_overrides(args))
    return data, train


def behaviour_from(args):
    """The behaviour of --behavior, with --data in place of generation and its probe thinking for
    --max-think tokens where it can; checked before any work."""
    from ..behaviours import load_behaviour
    from ..contrast_data import read_contrast_data
    from ..evals import with_max_think

    behaviour = load_behaviour(args.behavior)
    if getattr(args, "max_think", 0) and behaviour.probe is not None:
        behaviour = behaviour.with_probe(with_max_think(behaviour.probe, args.max_think))
    if args.data:
        behaviour = behaviour.with_data(args.data, args.data_split)
    if behaviour.data is not None:
        read_contrast_data(behaviour.data, behaviour.data_split)  # every row checked before the model loads
    else:
        behaviour.persona_prompts(args.n_personas)
    return behaviour


def benchmarks_from(args, behaviour) -> list:
    """(benchmark, items) of the behaviour's probe and --evals, items loaded (and checked) up front."""
    from ..evals import benchmark, with_max_think
    from ..sweep import sweep_benchmarks

    others = [with_max_think(benchmark(name.strip()), args.max_think) for name in args.evals.split(",")
              if name.strip()]
    dirs = data_dirs_from(args)
    return [(b, b.load(dirs.get(b.name), args.limit)) for b in sweep_benchmarks(behaviour, others)]


def cost_settings_from(args, *, need_mmlu: bool = True):
    """The MMLU + coherence settings of --mmlu-n / --mmlu-dir / --no-cost; the MMLU subset is read (and
    checked) here, before any model loads. Without need_mmlu (`run`), MMLU data the hub cannot give and
    no --mmlu-dir leave coherence alone, with a note saying how to add MMLU."""
    from ..cost import CostSettings, parse_mmlu_n
    from ..evals import mmlu

    if args.no_cost:
        return None
    settings = CostSettings(mmlu_n=parse_mmlu_n(args.mmlu_n), mmlu_dir=args.mmlu_dir)
    try:
        mmlu.load(settings.mmlu_dir, settings.mmlu_n)
    except WeightsteerError as err:
        if need_mmlu or args.mmlu_dir:
            raise
        return CostSettings(mmlu_missing=str(err))  # said once the model has loaded, not before a bad --model
    return settings


def add_cost_args(p) -> None:
    from ..evals.mmlu import DEFAULT_SUBSET

    p.add_argument("--mmlu-n", default=str(DEFAULT_SUBSET),
                   help=f"MMLU questions scored at every condition: a seeded sample stratified by subject "
                        f"(default {DEFAULT_SUBSET} = 2 per subject), or 'all' for the 14,042")
    p.add_argument("--no-cost", action="store_true", help="skip the MMLU and coherence measurements")


def check_tokenizer(tokenizer, benches) -> None:
    for bench, _ in benches:
        if hasattr(bench, "check"):
            bench.check(tokenizer)


def cmd_run(args) -> None:
    from dataclasses import replace

    import torch

    from ..across_seeds import showcase_spread
    from ..doses import parse_doses
    from ..locks import folder_lock
    from ..models import load_model
    from ..pipeline import behaviour_dir

    data, train = settings_from(args)
    seeds = seeds_from(args)
    doses = parse_doses(args.target_kl) if args.target_kl is not None else ()
    behaviour = behaviour_from(args)
    benches = benchmarks_from(args, behaviour)
    cost_settings = cost_settings_from(args, need_mmlu=False)
    started = time.time()
    model, tokenizer = load_model(args.model, matmul_dtype=args.matmul_dtype)
    check_tokenizer(tokenizer, benches)
    log(f"[threads] {torch.get_num_threads()} of {os.cpu_count()} cores (OMP_NUM_THREADS to choose)")
    results = {}
    for seed in seeds:  # each seed: its own data, adapters and calibration, in its own folder
        with folder_lock(behaviour_dir(Path(args.out), model, behaviour, seed)):
            if len(seeds) > 1:
                print(f"\n#### seed {seed}")
            run, results[seed] = run_locked(args, model, tokenizer, behaviour, benches, replace(data, seed=seed),
                                            replace(train, seed=seed), doses, cost_settings)
        log(f"seed {seed} done; run folder {run}")
    if len(seeds) > 1:
        print("\n".join(showcase_spread(results)))
    log(f"done in {time.time() - started:.0f} s")


def run_locked(args, model, tokenizer, behaviour, benches, data, train, doses, cost_settings) -> tuple[Path, dict]:
    """`run` of one seed once it holds its folder's lock; returns the run folder and the showcase."""
    from ..cost import Cost
    from ..doses import calibrate_doses
    from ..methods import WeightSteering
    from ..pipeline import behaviour_dir, build_direction
    from ..results import References
    from ..showcase import showcase
    from ..stages import file_hash

    run, delta = build_direction(model, tokenizer, behaviour, args.adapter, Path(args.out), data, train, log)
    log(f"[delta] {delta} in {run / 'delta.safetensors'}")
    source = file_hash(run / "delta.safetensors")
    alphas, kls = (-1.0, 0.0, 1.0), None
    if doses:
        method = WeightSteering(delta.meta.get("method", "weight"), delta=delta)
        prompts = behaviour.calibration[:N_RUN_CALIBRATION]
        cals = [cal for _, cal in calibrate_doses(model, tokenizer, method, source, prompts, run, doses, log=log)]
        points = sorted([(c[side].coef, c[side].kl) for c in cals for side in ("pos", "neg")] + [(0.0, 0.0)])
        alphas, kls = tuple(a for a, _ in points), tuple(k for _, k in points)
    refs = References(model, tokenizer, args.out, behaviour, log=log)
    if cost_settings is not None and cost_settings.mmlu_missing:
        log(f"[cost] MMLU not measured: {cost_settings.mmlu_missing}")
    cost = None if cost_settings is None else Cost(model, tokenizer, refs, behaviour,
                                                   behaviour_dir(Path(args.out), model, behaviour), cost_settings, log)
    shown = showcase(model, tokenizer, delta, behaviour, refs, run, source, benches=benches, alphas=alphas, kls=kls,
                     cost=cost, log=print)
    return run, shown


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
    add_matmul_dtype(p)
    add_direction_args(p)
    add_eval_args(p, evals_default="", evals_help="benchmarks to show beside the behaviour's probe, e.g. "
                                                  "sycophancy (a comma list; default none)")
    p.add_argument("--target-kl", default=None,
                   help="also calibrate alpha to this kl_p95 in nats (or to each of a comma list of doses) "
                        "and show the calibrated alphas")
    add_cost_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("smoke", help="the run pipeline on a tiny random model (about a minute)")
    p.add_argument("--adapter", default="lora", choices=METHODS)
    p.add_argument("--out", default=None, help="run folder root (default: a new temporary folder)")
    p.set_defaults(func=cmd_smoke)
