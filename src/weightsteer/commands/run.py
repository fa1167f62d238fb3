"""`weightsteer run` and `weightsteer smoke`: build a direction and show what it does."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import WeightsteerError
from . import add_model, log


def add_direction_args(p, *, default_method="lora"):
    from ..adapters import METHODS
    from ..behaviours import BEHAVIOURS

    p.add_argument("--behavior", "--behaviour", dest="behavior", default="honesty", choices=BEHAVIOURS)
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
    p.add_argument("--seed", type=int, default=0)


def settings_from(args):
    from ..pipeline import DataSettings
    from ..train import TrainConfig

    try:
        lo, hi = (float(x) for x in args.layers.split("-"))
    except ValueError:
        raise WeightsteerError(f"--layers must look like 0.25-0.75, got {args.layers!r}") from None
    for name in ("n_personas", "n_samples", "n_questions", "max_new_tokens", "steps", "rank"):
        if getattr(args, name) < 1:
            raise WeightsteerError(f"--{name.replace('_', '-')} must be at least 1")
    data = DataSettings(n_personas=args.n_personas, n_samples=args.n_samples, n_questions=args.n_questions,
                        max_new_tokens=args.max_new_tokens, seed=args.seed)
    train = TrainConfig(method=args.adapter, rank=args.rank, lr=args.lr, steps=args.steps,
                        layer_span=(lo, hi), seed=args.seed)
    return data, train


def cmd_run(args) -> None:
    from ..behaviours import get_behaviour
    from ..models import load_model
    from ..pipeline import build_direction
    from ..showcase import showcase

    data, train = settings_from(args)
    get_behaviour(args.behavior).persona_prompts(args.n_personas)  # validate before loading anything
    started = time.time()
    model, tokenizer = load_model(args.model)
    run, delta = build_direction(model, tokenizer, args.behavior, args.adapter, Path(args.out), data, train, log)
    log(f"[delta] {delta} in {run / 'delta.safetensors'}")
    alphas, kls = (-1.0, 0.0, 1.0), None
    if args.target_kl:
        cal = calibrate_run(model, tokenizer, delta, run, args.target_kl)
        alphas, kls = (cal["neg"].coef, 0.0, cal["pos"].coef), (cal["neg"].kl, 0.0, cal["pos"].kl)
    showcase(model, tokenizer, delta, args.behavior, run / "showcase.json", alphas=alphas, kls=kls, log=print)
    log(f"done in {time.time() - started:.0f} s; run folder {run}")


def calibrate_run(model, tokenizer, delta, run: Path, target_kl: float) -> dict:
    """Iso-KL alpha of each sign on 20 held-out calibration questions, kept in the run folder."""
    from ..behaviours import calibration_questions
    from ..calibrate import calibrate_both_signs, load_calibration, save_calibration
    from ..methods import WeightSteering
    from ..stages import file_hash, run_stage

    if not target_kl > 0:
        raise WeightsteerError(f"--target-kl must be a positive number of nats, got {target_kl}")
    path = run / "calibration.json"
    inputs = {"source": file_hash(run / "delta.safetensors"), "target": target_kl, "tol": 0.05, "n": 20}
    method = WeightSteering(delta.meta.get("method", "weight"), delta=delta)
    run_stage("calibrate", path, inputs, lambda out: save_calibration(out, calibrate_both_signs(
        model, tokenizer, method, target_kl, prompts=calibration_questions()[:20], log=log)), log)
    return load_calibration(path)


def cmd_smoke(args) -> None:
    import tempfile

    from ..pipeline import DataSettings, build_direction
    from ..showcase import showcase
    from ..tiny import embedded_tokenizer, tiny_model
    from ..train import TrainConfig

    started = time.time()
    model, tokenizer = tiny_model("llama", embedded_tokenizer())
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="weightsteer-smoke-"))
    data = DataSettings(n_samples=8, n_questions=4, max_new_tokens=12, batch_size=8)
    train = TrainConfig(method=args.adapter, steps=3, lr=1e-2)
    run, delta = build_direction(model, tokenizer, "honesty", args.adapter, out, data, train, log)
    showcase(model, tokenizer, delta, "honesty", run / "showcase.json", answer_tokens=8, log=print)
    log(f"smoke test passed in {time.time() - started:.0f} s; run folder {run}")




def register(sub) -> None:
    from ..adapters import METHODS

    p = sub.add_parser("run", help="generate data, train pos/neg adapters, take dW, show before/after")
    add_model(p)
    add_direction_args(p)
    p.add_argument("--target-kl", type=float, default=None,
                   help="also calibrate alpha to this kl_p95 (nats) and show the calibrated alphas")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("smoke", help="the run pipeline on a tiny random model (about a minute)")
    p.add_argument("--adapter", default="lora", choices=METHODS)
    p.add_argument("--out", default=None, help="run folder root (default: a new temporary folder)")
    p.set_defaults(func=cmd_smoke)
