"""The before/after table `weightsteer run` prints: probes and answers at a few alphas, with headroom.

Each probe (the behaviour's own, then any benchmark asked for with --evals) is scored at every
alpha and under the POS and NEG persona prompts; the persona and alpha = 0 rows come from
results.References and the steered rows are kept under the run folder, so a second run of the same
table only regenerates the greedy answers.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from . import chat
from .atomic import write_json
from .coherence import flag_cell
from .cost import cost_numbers
from .decode import decode, stop_token_ids
from .headroom import headroom_verdict
from .methods import WeightSteering
from .steer import steer
from .steer_rows import rows_steerable, steer_rows

ALPHAS = (-1.0, 0.0, 1.0)


def probe_numbers(bench, summary: dict) -> dict:
    """The numbers the table shows of one summary: the headline, the probe's mass and VADER if any."""
    numbers = {"stat": bench.stat(summary)}
    mass_key = getattr(bench, "mass_key", "")
    if mass_key and mass_key in summary:
        numbers["mass"] = summary[mass_key]
    if "vader" in summary:
        numbers["vader"] = summary["vader"]
    return numbers


def score_probe(bench, items, refs, delta, source: str, run: Path, alphas) -> dict:
    method = WeightSteering(delta.meta.get("method", "weight"), delta=delta)
    result = {"by_alpha": {}, "headroom": None}
    for alpha in alphas:
        rows = refs.base_rows(bench, items) if alpha == 0 else refs.scored(
            bench, items, method, alpha, run / "showcase" / f"{bench.name}.alpha{alpha:+.6g}", {"source": source})
        result["by_alpha"][str(alpha)] = probe_numbers(bench, bench.summarise(rows, n_boot=refs.n_boot))
    headroom = refs.headroom(bench, items)
    if headroom is not None:
        result["headroom"] = {"pos": bench.stat(headroom)["mean"],
                              "neg": bench.stat(bench.summarise(refs.persona_rows(bench, items, "neg"),
                                                                n_boot=refs.n_boot))["mean"],
                              "contrast": bench.stat(headroom, shift=True)}
    return result


def score_cost(cost, delta, source: str, run: Path, alphas, n_boot: int) -> dict:
    """MMLU accuracy (and its paired change vs alpha 0) and the coherence flag at each alpha."""
    method = WeightSteering(delta.meta.get("method", "weight"), delta=delta)
    return {str(alpha): cost_numbers(cost.base_summary(n_boot) if alpha == 0 else cost.measure(
        method, alpha, run / "showcase" / f"alpha{alpha:+.6g}", {"source": source}, n_boot)) for alpha in alphas}


def greedy_answers(model, tokenizer, delta, questions, alphas, max_new_tokens: int) -> dict[str, list[str]]:
    """{str(alpha): each question's greedy answer}: the answers at every alpha in one batch where the
    direction allows it (steer_rows), else one batch per alpha with alpha * dW added to the weights."""
    prompts = [chat.render(tokenizer, chat.messages(q)) for q in questions]
    stops = stop_token_ids(model, tokenizer)

    def answer(batch: list[str], desc: str, keep_rows=None) -> list[str]:
        enc = chat.encode(tokenizer, batch, next(model.parameters()).device)
        with tqdm(total=max_new_tokens, desc=desc, unit="step") as bar:
            tokens = decode(model, enc.input_ids, enc.attention_mask, max_new_tokens=max_new_tokens,
                            stop_ids=stops, keep_rows=keep_rows, on_step=lambda: bar.update(1)).tokens
        return [text.strip() for text in tokenizer.batch_decode(tokens, skip_special_tokens=True)]

    if not rows_steerable(model, delta):
        answers = {}
        for alpha in alphas:
            with steer(model, delta, alpha):
                answers[str(alpha)] = answer(prompts, f"answers alpha={alpha:+.3g}")
        return answers
    with steer_rows(model, delta, [alpha for alpha in alphas for _ in prompts]) as rows:
        texts = answer(prompts * len(alphas), f"answers at {len(alphas)} alphas", rows.keep)
    n = len(prompts)
    return {str(alpha): texts[k * n:(k + 1) * n] for k, alpha in enumerate(alphas)}


def showcase(model, tokenizer, delta, behaviour, refs, run: Path, source: str, *, benches=(), alphas=ALPHAS,
             kls=None, answer_tokens: int = 48, cost=None, log=print) -> dict:
    """Probes and greedy answers at each alpha (kls: the calibrated kl_p95 of each, when known).

    `benches` are (benchmark, items) pairs: the behaviour's probe first, then any others; `cost` (a
    cost.Cost) adds MMLU accuracy and the coherence flag at each alpha."""
    started = time.time()
    result = {"behaviour": behaviour.name, "pos_label": behaviour.pos_label, "alphas": list(alphas),
              "kl_p95": list(kls) if kls else None, "probes": {},
              "questions": list(behaviour.showcase)}
    for bench, items in benches:
        result["probes"][bench.name] = score_probe(bench, items, refs, delta, source, run, alphas)
    if cost is not None:
        result["cost"] = score_cost(cost, delta, source, run, alphas, refs.n_boot)
    result["answers"] = greedy_answers(model, tokenizer, delta, behaviour.showcase, alphas, answer_tokens)
    result["seconds"] = round(time.time() - started, 1)
    write_json(run / "showcase.json", result)
    log(format_showcase(result, has_probe=behaviour.probe is not None))
    return result


def cost_lines(cost: dict, alphas: list[str]) -> list[str]:
    """The capability line (MMLU accuracy, and its paired change vs alpha 0) and the coherence flag."""
    def acc(numbers: dict) -> str:
        shift = numbers["mmlu_shift"]
        change = f" ({shift['mean']:+.3f})" if shift else ""
        return f"{numbers['mmlu_acc']['mean']:.3f}{change}"

    lines = []
    if cost[alphas[0]]["mmlu_acc"] is not None:
        n = cost[alphas[0]]["mmlu_acc"]["n"]
        lines.append(f"{f'MMLU acc (n={n}, vs +0)':<34} | " + " | ".join(f"{acc(cost[a]):^21}" for a in alphas))
    return lines + [f"{'coherence (degenerate/prompts)':<34} | " + " | ".join(f"{flag_cell(cost[a]['coherence']):^21}"
                                                                    for a in alphas)]


def _cell(stat: dict | None) -> str:
    if not stat or stat.get("mean") is None:
        return f"{'n/a':^21}"
    return f"{stat['mean']:+6.2f} [{stat['lo']:+.2f},{stat['hi']:+.2f}]"


def format_showcase(result: dict, *, has_probe: bool = True) -> str:
    alphas = [str(a) for a in result["alphas"]]
    lines = [f"\n== {result['behaviour']}: probes (mean [95% CI]; higher = more {result['pos_label']})"]
    header = f"{'probe':<14} {'NEG prompt':>9} {'POS prompt':>9} | " + " | ".join(
        f"{'alpha ' + format(float(a), '+.3g'):^21}" for a in alphas)
    lines += [header, "-" * len(header)]
    if result.get("kl_p95"):
        lines.append(f"{'kl_p95':<34} | " + " | ".join(f"{k:^21.2f}" for k in result["kl_p95"]))
    if not has_probe:
        lines.append(f"'{result['behaviour']}' has no probe: only kl_p95 and the answers below show what "
                     "steering does (add a [probe] table to its file)")
    for name, probe in result["probes"].items():
        head = probe["headroom"] or {"neg": None, "pos": None}
        prompts = " ".join(f"{v:>+9.2f}" if v is not None else f"{'n/a':>9}" for v in (head["neg"], head["pos"]))
        lines.append(f"{name[:14]:<14} {prompts} | " + " | ".join(_cell(probe["by_alpha"][a]["stat"]) for a in alphas))
        for key, label in (("mass", "  mass"), ("vader", "  VADER")):
            if key in probe["by_alpha"][alphas[0]]:
                lines.append(f"{label:<34} | " + " | ".join(_cell(probe["by_alpha"][a][key]) for a in alphas))
    if result.get("cost"):
        lines += cost_lines(result["cost"], alphas)
    for name, probe in result["probes"].items():
        low, high = (probe["by_alpha"][a]["stat"]["mean"] for a in (alphas[0], alphas[-1]))
        contrast = probe["headroom"]["contrast"] if probe["headroom"] else None
        moved = f"{high - low:+.2f}" if low is not None and high is not None else "n/a"
        prompts = f"the prompts moved it {contrast['mean']:+.2f}. " if contrast and contrast["mean"] is not None else ""
        lines.append(f"{name}: steering alpha {float(alphas[0]):+.3g} -> {float(alphas[-1]):+.3g} moved {moved}; "
                     f"{prompts}{headroom_verdict(contrast)}")
    lines.append("\n== answers (greedy)")
    for i, question in enumerate(result["questions"]):
        lines.append(f"Q: {question}")
        for a in alphas:
            text = " ".join(result["answers"][a][i].split())
            lines.append(f"  alpha {float(a):+.3g}: {text[:220]}")
    return "\n".join(lines)
