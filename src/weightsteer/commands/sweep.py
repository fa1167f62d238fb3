"""`weightsteer sweep` and `weightsteer report`."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from ..errors import WeightsteerError
from . import add_model, log
from .run import add_direction_args, settings_from


def cmd_sweep(args) -> None:
    from ..evals import BENCHMARKS
    from ..models import load_model
    from ..sweep import Sweep, SweepSettings, parse_methods

    methods = parse_methods(args.methods)
    benchmarks = tuple(b.strip() for b in args.evals.split(","))
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown:
        raise WeightsteerError(f"unknown benchmark '{unknown[0]}': choose from {', '.join(sorted(BENCHMARKS))}")
    data, train = settings_from(args)
    data_dirs = {b: d for b, d in (("tinymfv", args.tinymfv_dir), ("airisk", args.airisk_dir)) if d}
    settings = SweepSettings(args.behavior, methods, benchmarks, args.target_kl, args.tol, args.limit, data_dirs,
                             pos_only=tuple(b for b in args.pos_only.split(",") if b),
                             n_calibration=args.n_calibration, data=data, train={"steps": train.steps, "rank": train.rank, "lr": train.lr,
                                               "layer_span": train.layer_span})
    started = time.time()
    model, tokenizer = load_model(args.model)
    status = Sweep(model, tokenizer, settings, Path(args.out), log).run()
    failed = [m for m in methods if not status.get(m, {}).get("ok")]
    log(f"sweep finished in {time.time() - started:.0f} s: {len(methods) - len(failed)} methods ok"
        + (f", failed: {', '.join(failed)}" if failed else ""))
    if failed and len(failed) == len(methods):
        raise WeightsteerError("every method failed: see the messages above and sweep.json")


def cmd_report(args) -> None:
    from ..report import build_report

    command = "weightsteer " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    label = args.model.rstrip("/").split("/")[-1]
    for behaviour in args.behavior.split(","):
        out = build_report(Path(args.out), label, behaviour, Path(args.to) / label, command)
        print(f"wrote {out}")


def cmd_headroom(args) -> None:
    from ..headroom import PROBES, headroom_verdict, probe_stat
    from ..models import load_model
    from ..report import ci
    from ..sweep import Sweep, SweepSettings

    behaviours = [b.strip() for b in args.behavior.split(",")]
    unknown = [b for b in behaviours if b not in PROBES]
    if unknown:
        raise WeightsteerError(f"unknown behaviour '{unknown[0]}': choose from {', '.join(PROBES)}")
    model, tokenizer = load_model(args.model)
    print("| behaviour | probe | POS - NEG persona prompt [95% CI] | verdict |\n|---|---|---|---|")
    for behaviour in behaviours:
        bench, axis = PROBES[behaviour]
        settings = SweepSettings(behaviour, (), (bench,), limit=args.limit,
                                 data_dirs={"tinymfv": args.tinymfv_dir} if args.tinymfv_dir else {})
        stat = probe_stat(Sweep(model, tokenizer, settings, Path(args.out), log).headroom(bench), axis)
        probe = f"{bench} {axis} axis" if axis else f"{bench} log-ratio"
        print(f"| {behaviour} | {probe} | {ci(stat, '+.3f')} | {headroom_verdict(stat).split(':')[0]} |", flush=True)


def register(sub) -> None:
    p = sub.add_parser("sweep", help="every method for a behaviour: build, calibrate to one KL, evaluate")
    add_model(p)
    add_direction_args(p)
    p.add_argument("--methods", default="all", help="comma list of methods, or all / weight / activation / prompting")
    p.add_argument("--evals", default="tinymfv,sycophancy", help="comma list (default tinymfv,sycophancy)")
    p.add_argument("--target-kl", type=float, default=1.0)
    p.add_argument("--tol", type=float, default=0.05)
    p.add_argument("--limit", type=int, default=None, help="only the first N items of each benchmark")
    p.add_argument("--pos-only", default="", help="benchmarks to score at +C only, e.g. tinymfv (halves their cost)")
    p.add_argument("--n-calibration", type=int, default=None, help="calibration prompts (default: all 40)")
    p.add_argument("--tinymfv-dir", default=None, help="local copy of tiny-mfv (default: the hub)")
    p.add_argument("--airisk-dir", default=None, help="local copy of AIRiskDilemmas (default: the hub)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("headroom", help="how far each behaviour's probe moves under the POS vs NEG persona prompt")
    add_model(p)
    p.add_argument("--behavior", "--behaviour", dest="behavior", default="honesty,trad_care,authority,sycophancy,mood",
                   help="a comma list (default: all)")
    p.add_argument("--out", default="out")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--tinymfv-dir", default=None, help="local copy of tiny-mfv (default: the hub)")
    p.set_defaults(func=cmd_headroom)

    p = sub.add_parser("report", help="markdown tables and plots from saved sweep summaries")
    add_model(p)
    p.add_argument("--behavior", "--behaviour", dest="behavior", default="trad_care",
                   help="one behaviour or a comma list")
    p.add_argument("--out", default="out", help="root of the run folders (default: out)")
    p.add_argument("--to", default="docs/report", help="report folder (default: docs/report)")
    p.set_defaults(func=cmd_report)
