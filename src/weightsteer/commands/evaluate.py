"""`weightsteer eval` and `weightsteer calibrate`: score or calibrate one direction from the command line."""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightsteerError
from . import add_allow_modified_base, add_matmul_dtype, add_model, count, log, tolerance
from .run import add_max_think


def cmd_calibrate(args) -> None:
    from ..behaviours import calibration_questions, load_behaviour
    from ..delta import WeightDelta
    from ..doses import calibrate_doses, dose_dir, parse_doses
    from ..locks import folder_lock
    from ..methods import WeightSteering
    from ..models import load_model
    from ..stages import file_hash

    doses = parse_doses(args.target_kl)
    prompts = load_behaviour(args.behavior).calibration if args.behavior else calibration_questions()
    delta = WeightDelta.load(args.delta)
    model, tokenizer = load_model(args.model or _model_of(delta), matmul_dtype=args.matmul_dtype)
    delta.check_fits(model, args.allow_modified_base)
    method = WeightSteering(delta.meta.get("method", "weight"), delta=delta)
    folder = Path(args.delta).parent
    with folder_lock(folder):
        for dose, results in calibrate_doses(model, tokenizer, method, file_hash(Path(args.delta)), prompts, folder,
                                             doses, args.tol, log):
            for side, r in results.items():
                state = "converged" if r.converged else f"NOT converged ({r.reason})"
                print(f"kl {dose:g} {side}: alpha {r.coef:+.4g}  kl_p95 {r.kl:.3f}  {r.iterations} evaluations, "
                      f"{state}")
            log(f"saved {dose_dir(folder, dose) / 'calibration.json'}")


def _model_of(delta) -> str:
    name = delta.meta.get("base_model")
    if not name:
        raise WeightsteerError("the direction does not record its base model: pass --model")
    return name


def _steering(args):
    """(method, coefficient, label) from --delta/--alpha/--calibrated/--prompt."""
    from ..delta import WeightDelta
    from ..doses import calibrated_coef, parse_doses
    from ..methods import UNSTEERED, WeightSteering, prompt_baseline
    from ..steer import check_alpha

    if args.prompt and args.delta:
        raise WeightsteerError("use --delta or --prompt, not both")
    if (args.alpha is not None or args.calibrated) and not args.delta:
        raise WeightsteerError("--alpha and --calibrated steer a direction: give it with --delta")
    if args.prompt:
        return prompt_baseline(args.prompt), 0.0, "prompt"
    if not args.delta:
        return UNSTEERED, 0.0, "base"
    delta = WeightDelta.load(args.delta)
    if args.calibrated:
        target = parse_doses(args.target_kl)[0] if args.target_kl is not None else None
        coef = calibrated_coef(args.delta, args.calibrated, target)
    elif args.alpha is None:
        raise WeightsteerError("with --delta, give --alpha A or --calibrated pos|neg")
    else:
        coef = check_alpha(args.alpha)
    return WeightSteering(delta.meta.get("method", "weight"), delta=delta), coef, f"alpha{coef:+.4g}"


def cmd_eval(args) -> None:
    from ..atomic import write_json
    from ..evals import benchmark, with_max_think
    from ..methods import UNSTEERED
    from ..models import load_model, model_label
    from ..results import base_stem, score_rows

    bench = with_max_think(benchmark(args.benchmark), args.max_think)
    items = bench.load(args.data_dir, args.limit)  # bad data fails before the model loads
    method, coef, label = _steering(args)
    delta = getattr(method, "delta", None)
    model, tokenizer = load_model(args.model if args.model else (_model_of(delta) if delta else "smollm2-135m"),
                                  matmul_dtype=args.matmul_dtype)
    if delta is not None:
        delta.check_fits(model, args.allow_modified_base)  # before any scoring, so a mismatch leaves no files
    if hasattr(bench, "check"):
        bench.check(tokenizer)
    root = Path(args.out_root)
    out = Path(args.out) if args.out else (Path(args.delta).parent / "eval" if args.delta
                                          else root / model_label(model) / "eval")
    base, _ = score_rows(model, tokenizer, bench, items, UNSTEERED, 0.0, base_stem(root, model, bench),
                         batch_size=args.batch_size, log=log)
    rows = base
    if label != "base":
        rows, _ = score_rows(model, tokenizer, bench, items, method, coef, out / f"{bench.name}.{label}",
                             {"source": str(args.delta or args.prompt)}, batch_size=args.batch_size, log=log)
    summary = bench.summarise(rows, base_rows=base if label != "base" else None, n_boot=args.n_boot)
    write_json(out / f"{bench.name}.{label}.summary.json",
               {"benchmark": bench.name, "label": label, "coef": coef, "summary": summary})
    print(f"{bench.name} [{label}]: {headline(bench, summary, label != 'base')}  ({out})")
    if bench.name == "tinymfv":
        from ..evals.tinymfv import foundation_table

        print("\n".join(foundation_table(summary)))


def headline(bench, summary: dict, with_shift: bool) -> str:
    """The benchmark's headline number (and shift vs base); a run where no item could be scored (a
    model that does not answer the probe: every tiny-mfv cell below the bool-mass floor) says so."""
    value = bench.stat(summary)["mean"]
    if value is None:
        kept = f"0 of {summary['n_cells']} cells kept" if "n_cells" in summary else "no item could be scored"
        return f"no {bench.HEADLINE_KEY}: {kept}; the model does not answer the probe"
    shift = bench.stat(summary, shift=True)["mean"] if with_shift else None
    return f"{bench.HEADLINE_KEY} {value:+.3f}" + (f", shift vs base {shift:+.3f}" if shift is not None else
                                                    ", shift vs base n/a" if with_shift else "")


def register(sub) -> None:
    p = sub.add_parser("eval", help="score a model (optionally steered or prompted) on a benchmark or a probe")
    p.add_argument("benchmark", help="tinymfv, airisk, mmlu, a built-in behaviour's probe (e.g. sycophancy) or a "
                                     "behaviour file's probe (path to the .toml)")
    p.add_argument("--model", default=None, help="default: the direction's base model, else smollm2-135m")
    add_matmul_dtype(p)
    p.add_argument("--delta", help="a steering direction (delta.safetensors)")
    p.add_argument("--alpha", help="steering strength")
    p.add_argument("--calibrated", choices=("pos", "neg"), help="use the calibrated alpha beside --delta")
    p.add_argument("--target-kl", default=None, help="with --calibrated: which dose, when there are several")
    p.add_argument("--prompt", help="prompt baseline: this text as the system prompt")
    p.add_argument("--limit", type=count, default=None,
                   help="a seeded sample of N items, stratified by the benchmark's groups, for a quick look")
    p.add_argument("--data-dir", default=None, help="local copy of the benchmark's data")
    add_max_think(p)
    p.add_argument("--batch-size", type=count, default=16)
    p.add_argument("--n-boot", type=count, default=256)
    p.add_argument("--out", default=None, help="folder for rows and summary (default: the run folder)")
    p.add_argument("--out-root", default="out", help="root of the run folders, where unsteered rows are shared")
    add_allow_modified_base(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("calibrate", help="iso-KL: the alpha of each sign at which kl_p95 hits the target")
    add_model(p)
    add_matmul_dtype(p)
    p.set_defaults(model=None)
    p.add_argument("--delta", required=True)
    p.add_argument("--target-kl", default="1", help="kl_p95 in nats, or a comma list of doses (default 1)")
    p.add_argument("--tol", type=tolerance, default=0.05, help="relative tolerance on kl_p95 (default 0.05)")
    p.add_argument("--behavior", "--behaviour", dest="behavior", default=None,
                   help="calibrate on this behaviour's calibration prompts (default: the question pool's 40)")
    add_allow_modified_base(p)
    p.set_defaults(func=cmd_calibrate)
