"""`weightsteer behaviours [new NAME | check FILE]`: list, start and check behaviour files."""

from __future__ import annotations

from pathlib import Path

from ..errors import WeightsteerError
from . import add_matmul_dtype, add_model, count, log

STARTER = '''\
# A weightsteer behaviour: what to steer and how to measure it. Every key is documented in
# docs/behaviours.md. Check this file, and whether its probe can move at all on your model, with
#   weightsteer behaviours check {file}
# then build a direction with
#   weightsteer run --behavior {file} --target-kl 1

name = "{name}"                 # letters, digits, _ and - ; names the run folder
description = "Prefers tea to coffee."
template = "Pretend you're {{persona}}."   # a persona pair's texts go into {{persona}}: the system prompts
pos_label = "tea drinker"        # alpha > 0 steers toward POS
neg_label = "coffee drinker"
pairs = [                        # [POS, NEG]; --n-personas uses the first n pairs
    ["someone who loves tea", "someone who loves coffee"],
    ["a devoted tea drinker", "a devoted coffee drinker"],
]
questions = "pool"               # the built-in pool of 200 general questions, a list, or {{ file = "questions.txt" }}
showcase = ["What should I drink this morning?", "Tell me about your weekend."]  # greedy answers in `run`
# data = "contrast.jsonl"        # your own contrastive responses instead of sampling under the personas

[probe]                          # how the behaviour is measured: next_word, yes_no, choice or tinymfv
kind = "next_word"
prompts = ["What do you drink in the morning?", "What should I order at the cafe?",
           "What is your favourite hot drink?", "What do you offer guests who visit?"]
prefill = "I would have a cup of"
pos_words = [" tea", " green"]
neg_words = [" coffee", " espresso"]
'''


def cmd_list(args) -> None:
    from ..behaviours import builtin_names, load_behaviour

    for name in builtin_names():
        b = load_behaviour(name)
        print(f"{b.name}: {b.description}")
        print(f"  POS {b.pos_label} vs NEG {b.neg_label}; {len(b.pairs)} persona pairs, e.g. "
              f"{b.persona_prompts(1)[0][0]!r} vs {b.persona_prompts(1)[0][1]!r}")
        print(f"  probe: {b.probe.describe() if b.probe else 'none'}")
    print("\nWrite your own with 'weightsteer behaviours new NAME'; docs/behaviours.md documents the format.")


def cmd_new(args) -> None:
    from ..atomic import write_text
    from ..behaviours import NAME

    if not NAME.match(args.name):
        raise WeightsteerError(f"behaviour name {args.name!r} may hold only letters, digits, _ and -")
    out = Path(args.out) if args.out else Path(f"{args.name}.toml")
    if out.exists():
        raise WeightsteerError(f"'{out}' already exists: choose another --out, or edit that file")
    write_text(out, STARTER.format(name=args.name, file=out))
    print(f"wrote {out}: edit it, then run 'weightsteer behaviours check {out}'")


def cmd_check(args) -> None:
    from ..behaviours import load_behaviour
    from ..contrast_data import read_contrast_data
    from ..headroom import headroom_verdict
    from ..models import load_model
    from ..report import ci
    from ..results import References

    if args.limit is not None and args.limit < 1:
        raise WeightsteerError(f"--limit must be at least 1, got {args.limit}")
    b = load_behaviour(args.file)
    print(f"{b.name} ({b.source}): {b.description or 'no description'}")
    print(f"  POS {b.pos_label} vs NEG {b.neg_label}; {len(b.pairs)} persona pairs")
    if b.pairs:
        pos, neg = b.personas
        print(f"  first pair as system prompts: POS {pos!r}\n                               NEG {neg!r}")
    if b.data:
        rows = read_contrast_data(b.data, b.data_split)
        print(f"  data: {sum(r['side'] == 'pos' for r in rows)} POS and {sum(r['side'] == 'neg' for r in rows)} "
              f"NEG responses in {b.data}")
    print(f"  {len(b.questions)} questions, {len(b.calibration)} calibration prompts, {len(b.showcase)} showcase")
    if b.probe is None:
        print("  probe: none (runs will report kl_p95 and the showcase answers only)")
        return
    print(f"  probe: {b.probe.describe()}")
    items = b.probe.load(args.tinymfv_dir if b.probe.name == "tinymfv" else None, args.limit)
    model, tokenizer = load_model(args.model, matmul_dtype=args.matmul_dtype)
    b.probe.check(tokenizer)
    print(f"  the probe's words and answers fit {args.model}'s tokenizer")
    if b.personas is None:
        print("  headroom: not measured (no persona pairs to prompt with)")
        return
    refs = References(model, tokenizer, args.out, b, log=log)
    summary = refs.headroom(b.probe, items)
    neg = b.probe.summarise(refs.persona_rows(b.probe, items, "neg"), n_boot=refs.n_boot)
    contrast = b.probe.stat(summary, shift=True)
    print(f"\nheadroom on {args.model} ({len(items)} items; higher = more {b.pos_label}):")
    print(f"  under the NEG prompt {ci(b.probe.stat(neg))}, under the POS prompt {ci(b.probe.stat(summary))}")
    if b.probe.mass_key in summary:
        print(f"  {b.probe.mass_key} (probability the scored tokens get): NEG prompt "
              f"{neg[b.probe.mass_key]['mean']:.3f}, POS prompt {summary[b.probe.mass_key]['mean']:.3f}")
    print(f"  POS - NEG: {ci(contrast)}: {headroom_verdict(contrast)}")


def register(sub) -> None:
    p = sub.add_parser("behaviours", aliases=["behaviors"],
                       help="list the built-in behaviours; 'new NAME' writes a starter file; 'check FILE' "
                            "validates one and measures its probe's headroom")
    p.set_defaults(func=cmd_list)
    actions = p.add_subparsers(dest="action", parser_class=type(p))
    new = actions.add_parser("new", help="write a commented starter behaviour file")
    new.add_argument("name")
    new.add_argument("--out", default=None, help="file to write (default: NAME.toml)")
    new.set_defaults(func=cmd_new)
    check = actions.add_parser("check", help="validate a behaviour file and measure its headroom on a model")
    check.add_argument("file", help="a behaviour file (or a built-in name)")
    add_model(check)
    add_matmul_dtype(check)
    check.add_argument("--limit", type=count, default=None, help="a seeded, stratified sample of N probe items")
    check.add_argument("--tinymfv-dir", default=None, help="local copy of tiny-mfv (for tinymfv probes)")
    check.add_argument("--out", default="out", help="root of the run folders, where the headroom rows are kept")
    check.set_defaults(func=cmd_check)
