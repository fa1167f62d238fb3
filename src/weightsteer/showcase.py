"""The before/after table `weightsteer run` prints: probes and answers at alpha in {-1, 0, +1}."""

from __future__ import annotations

import time

from . import chat
from .atomic import write_json
from .behaviours import get_behaviour
from .evals import honesty, mood, sycophancy
from .generate import sample_responses
from .headroom import headroom_verdict, measure_headroom
from .steer import steer

ALPHAS = (-1.0, 0.0, 1.0)
# The probe that speaks for each behaviour, then the held-out sycophancy probe every run shows.
OWN_PROBE = {"honesty": honesty, "mood": mood, "sycophancy": sycophancy}


def probes_for(behaviour: str) -> list:
    own = OWN_PROBE.get(behaviour)
    return [own, sycophancy] if own and own is not sycophancy else [sycophancy]


def _name(bench) -> str:
    return bench.__name__.rsplit(".", 1)[-1]


def showcase(model, tokenizer, delta, behaviour: str, out_path, *, alphas=ALPHAS, answer_tokens: int = 48,
             log=print) -> dict:
    started = time.time()
    b = get_behaviour(behaviour)
    pos_system, neg_system = b.persona_prompts(1)[0]
    result = {"behaviour": behaviour, "alphas": list(alphas), "probes": {}, "answers": {}}
    questions = b.fixed_questions()
    prompts = [chat.render(tokenizer, chat.messages(q)) for q in questions]
    for alpha in alphas:
        with steer(model, delta, alpha):
            for bench in probes_for(behaviour):
                items = bench.load()
                result["probes"].setdefault(_name(bench), {})[str(alpha)] = bench.summarise(
                    bench.score(model, tokenizer, items, progress=False))
            answers = sample_responses(model, tokenizer, prompts, max_new_tokens=answer_tokens, temperature=0,
                                       seed=0, batch_size=len(prompts), desc=f"answers alpha={alpha:+g}",
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
        f"{'alpha ' + format(a, '+g'):^21}" for a in alphas)
    lines += [header, "-" * len(header)]
    for name, probe in result["probes"].items():
        head = probe["headroom"]
        cells = [_cell(probe[str(a)], "log_ratio") for a in alphas]
        lines.append(f"{name:<11} {head['neg']:>+10.2f} {head['pos']:>+10.2f} | " + " | ".join(cells))
    for name, probe in result["probes"].items():
        head = probe["headroom"]
        moved = probe[str(alphas[-1])]["log_ratio"]["mean"] - probe[str(alphas[0])]["log_ratio"]["mean"]
        lines.append(f"{name}: steering alpha {alphas[0]:+g} -> {alphas[-1]:+g} moved {moved:+.2f} nats; "
                     f"the prompts moved it {head['contrast']['mean']:+.2f}. {headroom_verdict(head['contrast'])}")
    lines.append("\n== answers (greedy)")
    for i, question in enumerate(result["questions"]):
        lines.append(f"Q: {question}")
        for a in alphas:
            text = " ".join(result["answers"][str(a)][i].split())
            lines.append(f"  alpha {a:+g}: {text[:220]}")
    return "\n".join(lines)
