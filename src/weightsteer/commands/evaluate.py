"""`weightsteer eval` and `weightsteer calibrate`: score or calibrate one direction from the command line."""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightsteerError
from . import add_model, log


def cmd_calibrate(args) -> None:
    from ..calibrate import calibrate, save_calibration
    from ..delta import WeightDelta
    from ..methods import WeightSteering
    from ..models import load_model

    delta = WeightDelta.load(args.delta)
    if not args.target_kl > 0:
        raise WeightsteerError(f"--target-kl must be a positive number of nats, got {args.target_kl}")
    model, tokenizer = load_model(args.model or _model_of(delta))
    method = WeightSteering(delta.meta.get("method", "weight"), delta=delta)
    results = {}
    for side, sign in (("pos", 1), ("neg", -1)):
        r = calibrate(model, tokenizer, method, args.target_kl, args.tol, sign, max_iter=args.max_iter)
        results[side] = r
        state = "converged" if r.converged else f"NOT converged ({r.reason})"
        print(f"{side}: alpha {r.coef:+.4g}  kl_p95 {r.kl:.3f}  {r.iterations} evaluations, {state}")
    out = Path(args.delta).with_name("calibration.json")
    save_calibration(out, results)
    log(f"saved {out}")


def _model_of(delta) -> str:
    name = delta.meta.get("base_model")
    if not name:
        raise WeightsteerError("the direction does not record its base model: pass --model")
    return name


def _steering(args):
    """(method, coefficient, label) from --delta/--alpha/--calibrated/--prompt."""
    from ..calibrate import load_calibration
    from ..delta import WeightDelta
    from ..methods import UNSTEERED, WeightSteering, prompt_baseline
    from ..steer import check_alpha

    if args.prompt and args.delta:
        raise WeightsteerError("use --delta or --prompt, not both")
    if args.prompt:
        return prompt_baseline(args.prompt), 0.0, "prompt"
    if not args.delta:
        return UNSTEERED, 0.0, "base"
    delta = WeightDelta.load(args.delta)
    if args.calibrated:
        cal = load_calibration(Path(args.delta).with_name("calibration.json"))
        coef = cal[args.calibrated].coef
    elif args.alpha is None:
        raise WeightsteerError("with --delta, give --alpha A or --calibrated pos|neg")
    else:
        coef = check_alpha(args.alpha)
    return WeightSteering(delta.meta.get("method", "weight"), delta=delta), coef, f"alpha{coef:+.4g}"


def cmd_eval(args) -> None:
    from ..atomic import write_json
    from ..evals import BENCHMARKS
    from ..methods import UNSTEERED
    from ..models import load_model, model_label
    from ..results import base_stem, score_rows

    module = BENCHMARKS[args.benchmark]
    items = module.load(args.data_dir, args.limit)  # bad data fails before the model loads
    method, coef, label = _steering(args)
    delta = getattr(method, "delta", None)
    model, tokenizer = load_model(args.model if args.model else (_model_of(delta) if delta else "smollm2-135m"))
    if delta is not None:
        delta.check_fits(model)  # before any scoring, so a mismatch leaves no files
    root = Path(args.out_root)
    out = Path(args.out) if args.out else (Path(args.delta).parent / "eval" if args.delta
                                          else root / model_label(model) / "eval")
    base, _ = score_rows(model, tokenizer, args.benchmark, items, UNSTEERED, 0.0,
                         base_stem(root, model_label(model), args.benchmark), batch_size=args.batch_size, log=log)
    rows = base
    if label != "base":
        rows, _ = score_rows(model, tokenizer, args.benchmark, items, method, coef, out / f"{args.benchmark}.{label}",
                             {"source": str(args.delta or args.prompt)}, batch_size=args.batch_size, log=log)
    summary = module.summarise(rows, base_rows=base if label != "base" else None, n_boot=args.n_boot)
    write_json(out / f"{args.benchmark}.{label}.summary.json",
               {"benchmark": args.benchmark, "label": label, "coef": coef, "summary": summary})
    value = module.headline(summary)
    shift = f", shift vs base {module.headline(summary, shift=True):+.3f}" if label != "base" else ""
    print(f"{args.benchmark} [{label}]: {module.HEADLINE_KEY} {value:+.3f}{shift}  ({out})")


def register(sub) -> None:
    from ..evals import BENCHMARKS

    p = sub.add_parser("eval", help="score a model (optionally steered or prompted) on a benchmark")
    p.add_argument("benchmark", choices=sorted(BENCHMARKS))
    p.add_argument("--model", default=None, help="default: the direction's base model, else smollm2-135m")
    p.add_argument("--delta", help="a steering direction (delta.safetensors)")
    p.add_argument("--alpha", help="steering strength")
    p.add_argument("--calibrated", choices=("pos", "neg"), help="use the calibration.json beside --delta")
    p.add_argument("--prompt", help="prompt baseline: this text as the system prompt")
    p.add_argument("--limit", type=int, default=None, help="only the first N items, for a quick look")
    p.add_argument("--data-dir", default=None, help="local copy of the benchmark's data")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--n-boot", type=int, default=256)
    p.add_argument("--out", default=None, help="folder for rows and summary (default: the run folder)")
    p.add_argument("--out-root", default="out", help="root of the run folders, where unsteered rows are shared")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="iso-KL: the alpha of each sign at which kl_p95 hits the target")
    add_model(p)
    p.set_defaults(model=None)
    p.add_argument("--delta", required=True)
    p.add_argument("--target-kl", type=float, default=1.0)
    p.add_argument("--tol", type=float, default=0.05, help="relative tolerance on kl_p95 (default 0.05)")
    p.add_argument("--max-iter", type=int, default=12)
    p.set_defaults(func=cmd_calibrate)
