"""The before/after table `weightsteer run` prints: probes and answers at alpha in {-1, 0, +1}."""

from __future__ import annotations

import time

from . import chat
from .atomic import write_json
from .behaviours import get_behaviour
from .evals import BENCHMARKS, sycophancy
from .generate import sample_responses
from .headroom import PROBES, headroom_verdict, measure_headroom
from .steer import steer

ALPHAS = (-1.0, 0.0, 1.0)


def probes_for(behaviour: str) -> list:
    """The behaviour's own probe, then the held-out sycophancy probe every run shows. tiny-mfv axes
    (trad_care, authority) take minutes per alpha on CPU: they are left to `weightsteer sweep`."""
    bench, axis = PROBES[behaviour]
    own = [BENCHMARKS[bench]] if axis is None and bench != "sycophancy" else []
    return own + [sycophancy]


def _name(bench) -> str:
    return bench.__name__.rsplit(".", 1)[-1]


def showcase(model, tokenizer, delta, behaviour: str, out_path, *, alphas=ALPHAS, kls=None,
             answer_tokens: int = 48, log=print) -> dict:
    """Probes and greedy answers at each alpha (kls: the calibrated kl_p95 of each, when known)."""
    started = time.time()
    b = get_behaviour(behaviour)
    pos_system, neg_system = b.persona_prompts(1)[0]
    result = {"behaviour": behaviour, "alphas": list(alphas), "kl_p95": list(kls) if kls else None,
              "probes": {}, "answers": {}}
    questions = b.fixed_questions()
    prompts = [chat.render(tokenizer, chat.messages(q)) for q in questions]
    for alpha in alphas:
        with steer(model, delta, alpha):
            for bench in probes_for(behaviour):
                items = bench.load()
                result["probes"].setdefault(_name(bench), {})[str(alpha)] = bench.summarise(
                    bench.score(model, tokenizer, items, progress=False))
            answers = sample_responses(model, tokenizer, prompts, max_new_tokens=answer_tokens, temperature=0,
                                       seed=0, batch_size=len(prompts), desc=f"answers alpha={alpha:+.3g}",
                                       greedy=True)
        result["answers"][str(alpha)] = answers
    for bench in probes_for(behaviour):
        result["probes"][_name(bench)]["headroom"] = measure_headroom(
            model, tokenizer, bench, bench.load(), pos_system, neg_system)
    result["questions"] = questions
    result["seconds"] = round(time.time() - started, 1)
    write_json(out_path, result)
    log(format_showcase(result))
    return result


def _cell(summary: dict, key: str) -> str:
    s = summary[key]
    return f"{s['mean']:+6.2f} [{s['lo']:+.2f},{s['hi']:+.2f}]"


def format_showcase(result: dict) -> str:
    alphas = result["alphas"]
    lines = [f"\n== {result['behaviour']}: probes (mean log-ratio [95% CI]; higher = more "
             f"{get_behaviour(result['behaviour']).pos_label} / more sycophantic)"]
    header = f"{'probe':<11} {'NEG prompt':>10} {'POS prompt':>10} | " + " | ".join(
        f"{'alpha ' + format(a, '+.3g'):^21}" for a in alphas)
    lines += [header, "-" * len(header)]
    if result.get("kl_p95"):
        lines.append(f"{'kl_p95':<33} | " + " | ".join(f"{k:^21.2f}" for k in result["kl_p95"]))
    for name, probe in result["probes"].items():
        head = probe["headroom"]
        cells = [_cell(probe[str(a)], "log_ratio") for a in alphas]
        lines.append(f"{name:<11} {head['neg']:>+10.2f} {head['pos']:>+10.2f} | " + " | ".join(cells))
        if "vader" in probe[str(alphas[0])]:  # the mood probe's independent check on greedy replies
            cells = [_cell(probe[str(a)], "vader") for a in alphas]
            lines.append(f"{'  VADER':<33} | " + " | ".join(cells))
    for name, probe in result["probes"].items():
        head = probe["headroom"]
        moved = probe[str(alphas[-1])]["log_ratio"]["mean"] - probe[str(alphas[0])]["log_ratio"]["mean"]
        lines.append(f"{name}: steering alpha {alphas[0]:+.3g} -> {alphas[-1]:+.3g} moved {moved:+.2f} nats; "
                     f"the prompts moved it {head['contrast']['mean']:+.2f}. {headroom_verdict(head['contrast'])}")
    lines.append("\n== answers (greedy)")
    for i, question in enumerate(result["questions"]):
        lines.append(f"Q: {question}")
        for a in alphas:
            text = " ".join(result["answers"][str(a)][i].split())
            lines.append(f"  alpha {a:+.3g}: {text[:220]}")
    return "\n".join(lines)
