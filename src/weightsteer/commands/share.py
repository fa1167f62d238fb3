"""`weightsteer export | compose | similarity | chat`: use a direction outside a run folder."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import WeightsteerError
from . import add_allow_modified_base, count, log


def model_name(args, delta) -> str:
    """--model, or the embedded model the direction says it was made for."""
    from ..models import EMBEDDED

    if args.model:
        return args.model
    made_for = delta.meta.get("base_model")
    if made_for in EMBEDDED:
        return made_for
    raise WeightsteerError(f"this needs the base model the direction was made for ('{made_for}'): pass --model")


def check_new_direction_file(path: Path) -> None:
    """Refuse to replace anything but an earlier direction file: the atomic write would delete it."""
    from ..delta import FORMAT
    from ..tensorfile import header_format

    if path.is_dir():
        raise WeightsteerError(f"'{path}' is a folder: --out must be a file path")
    if path.exists() and header_format(path) != FORMAT:
        raise WeightsteerError(f"will not replace '{path}': it is not a weightsteer direction; choose a new --out")


def check_export_out(out: Path, kind: str, model: str | None) -> None:
    """--out must be new or an earlier export of the same kind, and never the base model's folder."""
    from ..atomic import check_replaceable
    from ..models import local_model_folder

    check_replaceable(out, kind, protected=(local_model_folder(model) if model else None,))


def check_gguf_out(out: Path) -> None:
    """A GGUF --out must be a new file or a GGUF that weightsteer wrote: a user's own model file is
    never replaced."""
    from ..gguf_arch import written_by_weightsteer

    if out.is_dir():
        raise WeightsteerError(f"'{out}' is a folder: --out must be the path of the .gguf file to write")
    if out.exists() and not written_by_weightsteer(out):
        raise WeightsteerError(f"will not replace '{out}': weightsteer did not write it; choose a new --out")


# ---- export -----------------------------------------------------------------------------------

def cmd_export(args) -> None:
    from ..delta import WeightDelta
    from ..export import (
        LORA_KIND,
        check_lora_export,
        check_rank_args,
        export_lora,
        export_merged,
        read_calibration,
    )
    from ..models import load_model
    from ..steer import MERGED_KIND, check_alpha

    alpha = check_alpha(args.alpha)
    out = Path(args.out)
    if args.format == "merged" and (args.rank is not None or args.max_error is not None):
        raise WeightsteerError("--rank and --max-error apply to --format lora and gguf only")
    check_rank_args(args.rank, args.max_error)
    delta = WeightDelta.load(args.delta)
    if args.format == "gguf":
        check_gguf_out(out)
    else:
        check_export_out(out, LORA_KIND if args.format == "lora" else MERGED_KIND,
                         args.model or delta.meta.get("base_model"))
    if args.format == "merged":
        calibration = read_calibration(args.delta)
        name = model_name(args, delta)
        model, tokenizer = load_model(name)
        delta.check_fits(model, args.allow_modified_base)
        export_merged(model, tokenizer, delta, alpha, out, base_model=name, calibration=calibration)
        log(f"[export] {out}: {name} with {alpha:g} * dW merged in"
            + ("" if calibration else " (no calibration.json beside the direction)"))
        return
    if args.format == "gguf":
        export_gguf(args, delta, alpha, out)
        return
    check_lora_export(delta, args.rank, args.max_error)
    model = tokenizer = None
    if args.model or not delta.is_factored() or knows_model(delta):  # the KL check needs the model
        model, tokenizer = load_model(model_name(args, delta))
        delta.check_fits(model, args.allow_modified_base)
    report = export_lora(delta, alpha, out, rank=args.rank, max_error=args.max_error, model=model,
                         tokenizer=tokenizer, base_model=args.model, source=str(args.delta))
    kind = "exact" if report["exact"] else f"max relative Frobenius error {report['max_rel_error']:.3g}"
    kl = report["kl"]
    kl_text = f"; steered next-token KL exact vs exported mean {kl['mean']:.3g}, max {kl['max']:.3g}" if kl else ""
    log(f"[export] {out}: LoRA rank {report['rank']}, {kind}{kl_text}; details in {out / 'export_report.json'}")


def knows_model(delta) -> bool:
    """True when the direction names an embedded model, which can be loaded without --model."""
    from ..models import EMBEDDED

    return delta.meta.get("base_model") in EMBEDDED


def export_gguf(args, delta, alpha: float, out: Path) -> None:
    """A llama.cpp LoRA adapter GGUF, with the KL check on the base model it is for."""
    from ..export import check_lora_export, read_calibration
    from ..gguf_arch import gguf_arch
    from ..gguf_export import export_lora_gguf
    from ..models import load_model

    check_lora_export(delta, args.rank, args.max_error)
    name = model_name(args, delta)
    model, tokenizer = load_model(name)
    gguf_arch(model.config)  # an unsupported architecture is refused before any work
    delta.check_fits(model, args.allow_modified_base)
    calibration = read_calibration(args.delta)
    report = export_lora_gguf(delta, alpha, out, config=model.config, rank=args.rank, max_error=args.max_error,
                              model=model, tokenizer=tokenizer, calibration=calibration, source=str(args.delta))
    kind = "exact" if report["exact"] else f"max relative Frobenius error {report['max_rel_error']:.3g}"
    kl = report["kl"]
    log(f"[export] {out}: llama.cpp LoRA adapter ({report['architecture']}, rank {report['rank']}, {kind}; "
        f"steered next-token KL exact vs exported mean {kl['mean']:.3g}, max {kl['max']:.3g})"
        + ("" if calibration else "; no calibration.json beside the direction"))


# ---- export-base ------------------------------------------------------------------------------

def cmd_export_base(args) -> None:
    from ..gguf_base import export_base_gguf
    from ..models import resolve_model_path

    out = Path(args.out)
    check_gguf_out(out)
    folder = resolve_model_path(args.model)
    if not Path(folder).is_dir():
        raise WeightsteerError(f"'{args.model}' is not a local folder: download it (hf download {args.model} "
                               "--local-dir DIR) and pass --model DIR")
    summary = export_base_gguf(folder, out, args.outtype, log=log)
    log(f"[export-base] {out}: {args.model} as a llama.cpp {summary['architecture']} GGUF, {summary['outtype']}, "
        f"{summary['tensors']} tensors, pre-tokenizer '{summary['pre_tokenizer']}'")


# ---- compose ----------------------------------------------------------------------------------

def parse_term(term: str) -> tuple[Path, float]:
    """PATH:COEF, split on the last ':' (a path may hold ':' too); when what follows it is not a
    number, the whole term is the path and the coefficient is 1.0."""
    path, sep, coef = term.rpartition(":")
    try:
        value = float(coef) if sep else None
    except ValueError:
        value = None
    if value is None:
        return Path(term), 1.0
    if not math.isfinite(value):
        raise WeightsteerError(f"'{term}': the coefficient must be a finite number")
    return Path(path), value


def cmd_compose(args) -> None:
    from ..delta import WeightDelta

    terms = [parse_term(t) for t in args.terms]
    out = Path(args.out)
    check_new_direction_file(out)
    deltas = [(path, coef, WeightDelta.load(path)) for path, coef in terms]
    total = None
    for path, coef, delta in deltas:
        if total is not None:
            for name in set(total.parts) & set(delta.parts):
                if tuple(total.parts[name].shape) != tuple(delta.parts[name].shape):
                    raise WeightsteerError(f"'{path}' does not fit the others ('{name}' has another shape): "
                                           "directions of different base models cannot be combined")
        total = coef * delta if total is None else total + coef * delta
    behaviours = {d.meta.get("behaviour") for _, _, d in deltas}
    total.meta["behaviour"] = behaviours.pop() if len(behaviours) == 1 else "composed"
    total.meta["composed_of"] = [f"{path}:{coef:g}" for path, coef, _ in deltas]
    total.save(out)
    log(f"[compose] {out}: {' + '.join(f'{c:g} * {p}' for p, c, _ in deltas)} ({len(total.parts)} modules)")


# ---- similarity -------------------------------------------------------------------------------

def cmd_similarity(args) -> None:
    from ..delta import WeightDelta
    from ..models import load_model
    from ..similarity import (
        check_adapter_base,
        format_table,
        lora_file_change,
        merged_change,
        save_json,
        similarity,
    )

    delta = WeightDelta.load(args.delta)
    other_path = Path(args.adapter)
    if other_path.is_dir():  # before the model loads: a mismatch costs nothing
        check_adapter_base(delta, other_path, args.allow_other_base, warn=log)
    model = None
    if args.model:
        model, _ = load_model(args.model)
        delta.check_fits(model, args.allow_modified_base)
    other = lora_file_change(other_path) if other_path.is_dir() else WeightDelta.load(other_path)
    if other is None:
        if model is None:
            model, _ = load_model(model_name(args, delta))
            delta.check_fits(model, args.allow_modified_base)
        other = merged_change(model, other_path)
    sim = similarity(delta, other)
    if not set(delta.parts) & set(other.parts):
        log("[similarity] the two share no module: the cosine is 0 by construction (other layers or names?)")
    print(format_table(sim, args.top))
    if args.json:
        save_json(sim, args.json)
        log(f"[similarity] numbers in {args.json}")


# ---- chat -------------------------------------------------------------------------------------

def cmd_chat(args) -> None:
    from transformers.utils import logging as hf_logging

    from ..delta import WeightDelta
    from ..interactive import ChatSession
    from ..models import load_model
    from ..steer import check_alpha

    alpha = check_alpha(args.alpha)
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise WeightsteerError(f"--temperature must be a finite number >= 0, got {args.temperature}")
    delta = WeightDelta.load(args.delta)
    model, tokenizer = load_model(model_name(args, delta))
    delta.check_fits(model, args.allow_modified_base)
    hf_logging.set_verbosity_error()  # generation-config notes would break into the conversation
    ChatSession(model, tokenizer, delta, alpha, args.max_new_tokens, args.temperature).run()


# ---- registration -----------------------------------------------------------------------------

def register(sub) -> None:
    from ..models import DEFAULT_MODEL

    model_help = "HF id or local folder of the base model (default: the embedded model the direction names)"

    p = sub.add_parser("export", help="write alpha * dW as a PEFT LoRA adapter, a llama.cpp LoRA GGUF "
                                      "or a merged HF checkpoint")
    p.add_argument("--delta", required=True, help="a weightsteer direction (delta.safetensors)")
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--format", choices=("lora", "gguf", "merged"), default="lora")
    p.add_argument("--out", required=True, help="folder to write (a .gguf file for --format gguf)")
    p.add_argument("--model", default=None, help=model_help + "; needed for merged, and for the KL check")
    p.add_argument("--rank", type=int, default=None, help="LoRA rank for full-rank (or to cap factored) parts")
    p.add_argument("--max-error", type=float, default=None,
                   help="instead of --rank: smallest rank whose relative Frobenius error is at most this")
    add_allow_modified_base(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-base", help="write a base model (default: the embedded one's dense weights) "
                                           "as a llama.cpp GGUF, to serve exported GGUF adapters on")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"a local Llama or Qwen3 folder, or {DEFAULT_MODEL} "
                   "(default): its dense cache, the weights its directions were made on")
    p.add_argument("--format", choices=("gguf",), default="gguf")
    p.add_argument("--outtype", choices=("f32", "f16"), default="f16",
                   help="f32 reproduces the weights exactly; f16 (default) is half the size")
    p.add_argument("--out", required=True, help="the .gguf file to write")
    p.set_defaults(func=cmd_export_base)

    p = sub.add_parser("compose", help="a linear combination of directions: A.safetensors:1 B.safetensors:-0.5")
    p.add_argument("terms", nargs="+", metavar="PATH[:COEF]")
    p.add_argument("--out", required=True, help="the combined direction file to write")
    p.set_defaults(func=cmd_compose)

    p = sub.add_parser("similarity", help="cosine between a direction and a fine-tune's (or another) change")
    p.add_argument("--delta", required=True, help="a weightsteer direction")
    p.add_argument("--adapter", required=True, help="a PEFT adapter folder or another direction file")
    p.add_argument("--model", default=None, help=model_help + "; needed for non-LoRA adapters")
    p.add_argument("--top", type=count, default=10, help="modules to list (default 10)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.add_argument("--allow-other-base", action="store_true",
                   help="compare even though the adapter names another base model than the direction")
    add_allow_modified_base(p)
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("chat", help="chat in the terminal with the steered model (/help inside)")
    p.add_argument("--delta", required=True, help="a weightsteer direction")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--max-new-tokens", type=count, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    add_allow_modified_base(p)
    p.set_defaults(func=cmd_chat)
