"""Iso-KL calibration: the coefficient at which a steering method moves the model a fixed KL away.

The statistic (kl_p95): for each calibration question, rendered plainly (chat.messages(q), the
model's default system prompt, for every method alike), the steered model greedily writes T tokens;
then the steered model (inside method.apply) and the base model (outside) are both teacher-forced
on those same tokens, so both distributions at each generated position condition on identical
contexts. The per-token KL(steered || base) over the full vocabulary, in float32, is pooled over
questions x positions and its 95th percentile is the statistic. Positions after the first EOS are
dropped (the position that produced the EOS is kept). Prompt baselines have no coefficient and
are not calibrated.

The search (calibrate) finds |alpha| for one sign with |kl - target| <= tol * target. The tolerance
is relative, because targets range over orders of magnitude and a fixed absolute tolerance would be
loose for small targets and needlessly tight for large ones. It works on log|alpha| vs log KL (near
zero KL grows as a power of alpha, so that is close to a straight line): from `start` it takes
Newton/secant steps aimed at the target until it lands within the tolerance or brackets it (at most
x8 up, /64 down), then refines the bracket: a Newton step with the small-alpha slope 2 from a lower
end far below the target, secants through the last two evaluations, Illinois-modified regula falsi
of the bracket's ends when those fall outside it, bisection when that does too. A bracket that
shrinks below 1% of alpha with both ends still outside the band is a jump of KL across it (a greedy
token flips) and ends the search. The second sign starts where the first ended, and a second dose
where the first predicts (doses.calibrate_doses): the curves are rarely far apart. It never returns
a wrong alpha silently: without convergence it returns converged=False, the best point seen and a
reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import DynamicCache

from . import chat
from .atomic import write_json
from .behaviours import calibration_questions
from .decode import decode, positions_of, stop_token_ids
from .errors import WeightsteerError
from .methods import SteeringMethod

BATCH_SIZE = 40  # a sweep's 40 prompts in one batch: a decoding step costs about the same for 40 rows as for 16
FORMAT = "weightsteer.calibration/1"
STRATEGIES = ("illinois", "bisection")


@dataclass
class CalibrationResult:
    coef: float  # signed coefficient: sign * alpha
    kl: float  # kl_p95 measured at coef
    iterations: int  # steered evaluations used
    converged: bool
    history: list[tuple[float, float]] = field(default_factory=list)  # (coef, kl) in evaluation order
    target: float = math.nan
    reason: str = ""


# ---- the statistic ----------------------------------------------------------------------------

class PromptBatch:
    """A left-padded batch of calibration prompts and, once the first evaluation needs it, the base
    model's KV cache of the prompts and its distribution of the first generated token. The base model
    is the same at every evaluation of a search, so its pass over the prompts is done once; each
    evaluation then runs the base model over the generated tokens only."""

    def __init__(self, encoded):
        self.input_ids, self.attention_mask = encoded["input_ids"], encoded["attention_mask"]
        self.base_cache: DynamicCache | None = None
        self.base_first: torch.Tensor | None = None

    def base_logprobs(self, model, generated: torch.Tensor) -> torch.Tensor:
        """(batch, n, vocab) float32 log-probabilities of the base model at the positions that produced
        each of the n generated tokens (teacher-forced: prompt + generated[:, :-1])."""
        if self.base_cache is None:
            self.base_cache = DynamicCache(config=model.config)
            logits = model(input_ids=self.input_ids, attention_mask=self.attention_mask,
                           position_ids=positions_of(self.attention_mask), cache=self.base_cache, use_cache=True,
                           logits_to_keep=1).logits[:, -1]
            self.base_first = logits.float().log_softmax(-1)
        n = generated.shape[1]
        if n == 1:
            return self.base_first[:, None]
        mask = torch.cat([self.attention_mask, self.attention_mask.new_ones(len(generated), n - 1)], 1)
        positions = positions_of(self.attention_mask)[:, -1:] + torch.arange(1, n, device=generated.device)
        logits = model(input_ids=generated[:, :-1], attention_mask=mask, position_ids=positions,
                       cache=self.base_cache, use_cache=True).logits
        try:
            self.base_cache.crop(-(n - 1))  # back to the prompts alone for the next evaluation
        except (ValueError, RuntimeError):  # a sliding-window cache that cannot roll back: rebuild it next time
            self.base_cache = None
        return torch.cat([self.base_first[:, None], logits.float().log_softmax(-1)], 1)


def encode_prompts(tokenizer, questions: list[str], device) -> list[PromptBatch]:
    """Left-padded batches of the plain calibration prompts; reused across a whole search."""
    texts = [chat.render(tokenizer, chat.messages(q)) for q in questions]
    return [PromptBatch(chat.encode(tokenizer, texts[i:i + BATCH_SIZE], device))
            for i in range(0, len(texts), BATCH_SIZE)]


@torch.no_grad()
def token_kls(model, tokenizer, method: SteeringMethod, coef: float, batches: list[PromptBatch],
              T: int) -> torch.Tensor:
    """KL(steered || base) at every generated position before or at the first EOS, flattened.

    The steered distributions are the ones greedy decoding produced the tokens from (decode keeps
    them); the base model is teacher-forced on the generated tokens after its cached prompts."""
    stops = stop_token_ids(model, tokenizer)
    kls = []
    for batch in batches:
        with method.apply(model, coef):
            out = decode(model, batch.input_ids, batch.attention_mask, max_new_tokens=T, stop_ids=stops,
                         keep_logprobs=True)
        width = max(len(t) for t in out.tokens)  # rows that stopped early are padded; those positions are unused
        generated = torch.tensor([t + [tokenizer.pad_token_id] * (width - len(t)) for t in out.tokens],
                                 device=batch.input_ids.device)
        base = batch.base_logprobs(model, generated)
        for row, steered in enumerate(out.logprobs):
            p = steered.exp()
            kls.append(torch.where(p > 0, p * (steered - base[row, :len(steered)]), 0.0).sum(-1))
    return torch.cat(kls)


def kl_p95(model, tokenizer, method: SteeringMethod, coef: float, prompts: list[str] | None = None,
           T: int = 20) -> float:
    """The 95th percentile of per-token KL(steered || base) over prompts x generated positions."""
    batches = encode_prompts(tokenizer, calibration_questions() if prompts is None else prompts, model.device)
    return p95(token_kls(model, tokenizer, method, coef, batches, T))


def p95(values: torch.Tensor) -> float:
    return float(np.percentile(values.cpu().numpy(), 95))


# ---- the search -------------------------------------------------------------------------------

LN2 = math.log(2.0)


SMALL_ALPHA_SLOPE = 2.0  # near zero KL grows like alpha^2: the slope of log KL vs log|alpha| there
# A bracket narrower than this in log|alpha| (1% of alpha) whose ends are both outside the tolerance band
# means KL jumps across the band there: a smooth curve would need a slope near 10 (five times the small-alpha
# law) to cross the whole band within it. kl_p95 does jump where a greedy token flips (a random ia3 dW of the
# embedded model: 0.925 at |alpha| 1.58136, 1.089 at 1.58152), and no further evaluation lands inside.
MIN_BRACKET = 0.01
MAX_STEP_UP, MAX_STEP_DOWN = 3 * LN2, 6 * LN2  # steps before the bracket: at most x8 up, /64 down


def bracket_step(point: tuple[float, float], previous: tuple[float, float] | None, below: bool) -> float:
    """The next step in log|alpha| while the target is not yet bracketed: a Newton step on log KL vs
    log|alpha| aimed at the target itself. The first step assumes the small-alpha slope 2; later
    ones use the slope measured between the last two points (a secant, kept between 0.5 and 4), so a
    curve close to a power law is usually hit within the tolerance on the second or third
    evaluation. A step up is at most a factor 8, so a curve that explodes past the target cannot
    throw the search far into the broken region; a step down at most a factor 64, because coming
    down from a saturated curve (an activation direction started at alpha 1 whose alpha* is 0.02)
    its flat slope asks for a huge step, and landing far below the target is cheap to recover from:
    there KL follows the small-alpha law and the next step is accurate."""
    slope = SMALL_ALPHA_SLOPE
    if previous is not None and math.isfinite(point[1]) and math.isfinite(previous[1]) and point[0] != previous[0]:
        slope = min(max((point[1] - previous[1]) / (point[0] - previous[0]), 0.5), 4.0)
    if not math.isfinite(point[1]):
        return LN2 if below else -LN2
    jump = -point[1] / slope
    return min(jump, MAX_STEP_UP) if below else max(jump, -MAX_STEP_DOWN)


def refine_guess(lo: tuple[float, float], last: tuple[float, float], before_last: tuple[float, float],
                 first: bool) -> float | None:
    """The next point inside a bracket (log|alpha|), or None for Illinois' own secant of the bracket ends.

    First refinement with the lower end far below the target (KL < target / e): a Newton step from
    it with the small-alpha slope 2, because the upper end may sit on a saturated part of the curve
    that makes the bracket's secant useless. Later: the secant through the last two evaluations,
    which follows the curve's local slope where the bracket's far end no longer says anything."""
    x_lo, f_lo = lo
    if first and math.isfinite(f_lo) and f_lo < -1:
        return x_lo - f_lo / SMALL_ALPHA_SLOPE
    (x1, f1), (x0, f0) = last, before_last
    if not first and math.isfinite(f1) and math.isfinite(f0) and f1 != f0 and x1 != x0:
        return x1 - f1 * (x1 - x0) / (f1 - f0)
    return None


def well_inside(x: float | None, a: float, b: float) -> bool:
    """Whether x lies inside the bracket [a, b] by more than 1% of its width (else the step would
    barely shrink it)."""
    margin = 0.01 * abs(b - a)
    return x is not None and min(a, b) + margin < x < max(a, b) - margin


def search(kl_of: Callable[[float], float], target: float, tol: float = 0.05, sign: int = 1,
           start: float = 1.0, max_iter: int = 12, strategy: str = "illinois") -> CalibrationResult:
    """Find coef = sign * alpha with |kl_of(coef) - target| <= tol * target, in at most max_iter calls.

    A NaN or infinite KL (a model pushed until it breaks) counts as above the target.
    """
    if strategy not in STRATEGIES:
        raise WeightsteerError(f"unknown calibration strategy '{strategy}': choose one of {', '.join(STRATEGIES)}")
    if target <= 0 or tol <= 0 or start <= 0 or max_iter < 1 or sign not in (1, -1):
        raise WeightsteerError("calibration needs target > 0, tol > 0, start > 0, max_iter >= 1 and sign +1 or -1")
    history: list[tuple[float, float]] = []

    def evaluate(alpha: float) -> tuple[float, float]:
        """(log alpha, log(KL / target)): the second is negative below the target, positive above."""
        kl = float(kl_of(sign * alpha))
        history.append((sign * alpha, kl))
        return math.log(alpha), (math.log(kl / target) if 0 < kl < math.inf else -math.inf if kl == 0 else math.inf)

    def finish(converged: bool, reason: str) -> CalibrationResult:
        finite = [h for h in history if math.isfinite(h[1])] or history
        coef, kl = min(finite, key=lambda h: abs(h[1] - target))
        return CalibrationResult(coef, kl, len(history), converged, history, target, reason)

    def hit() -> bool:
        return abs(history[-1][1] - target) <= tol * target

    alpha = start
    point = evaluate(alpha)
    below = point[1] < 0
    previous = None
    while not hit() and (point[1] < 0) == below:
        if len(history) >= max_iter:
            side = "below" if point[1] < 0 else "above"
            return finish(False, f"KL stayed {side} the target {target:g} for |alpha| from {start:g} to "
                                 f"{alpha:.4g} (saturating or not monotone): no bracket")
        step = bracket_step(point, previous, below) if strategy == "illinois" else (LN2 if below else -LN2)
        previous, alpha = point, alpha * math.exp(step)
        point = evaluate(alpha)
    if hit():
        return finish(True, "converged")
    lo, hi = (previous, point) if point[1] > 0 else (point, previous)
    ends = lo, hi  # the bracket's ends as measured (Illinois halves the f of a kept end in lo / hi)
    kept = None  # the side replaced last; a second replacement of the same side halves the other's f
    last, before_last, first = point, previous, True
    while len(history) < max_iter:
        (x_lo, f_lo), (x_hi, f_hi) = lo, hi
        if abs(x_hi - x_lo) < MIN_BRACKET:
            (a, kl_a), (b, kl_b) = ((math.exp(x), target * math.exp(f)) for x, f in ends)
            return finish(False, f"KL jumps across the target {target:g} +-{tol:.0%} between |alpha| {a:.6g} "
                                 f"(kl {kl_a:.4g}) and {b:.6g} (kl {kl_b:.4g}), less than 1% of alpha apart (most "
                                 "likely a greedy token flips there): no alpha reaches the band; the closest point "
                                 "is returned")
        x = (x_lo + x_hi) / 2
        if strategy == "illinois":
            guess = refine_guess(lo, last, before_last, first)
            secant = ((x_lo * f_hi - x_hi * f_lo) / (f_hi - f_lo)
                      if math.isfinite(f_lo) and math.isfinite(f_hi) else None)
            x = guess if well_inside(guess, x_lo, x_hi) else secant if well_inside(secant, x_lo, x_hi) else x
        first = False
        point = evaluate(math.exp(x))
        before_last, last = last, point
        if hit():
            return finish(True, "converged")
        if point[1] < 0:
            if kept == "lo":
                hi = (x_hi, f_hi / 2)
            lo, kept, ends = point, "lo", (point, ends[1])
        else:
            if kept == "hi":
                lo = (x_lo, f_lo / 2)
            hi, kept, ends = point, "hi", (ends[0], point)
    return finish(False, f"max_iter={max_iter} evaluations used; target bracketed between |alpha| "
                         f"{math.exp(min(lo[0], hi[0])):.4g} and {math.exp(max(lo[0], hi[0])):.4g}")


def calibrate(model, tokenizer, method: SteeringMethod, target: float = 1.0, tol: float = 0.05, sign: int = 1,
              start: float = 1.0, max_iter: int = 12, prompts: list[str] | None = None, T: int = 20,
              strategy: str = "illinois") -> CalibrationResult:
    """The coefficient of one sign at which kl_p95 equals the target (see the module docstring)."""
    if not method.has_coefficient:
        raise WeightsteerError(f"'{method.name}' has no coefficient to calibrate")
    batches = encode_prompts(tokenizer, calibration_questions() if prompts is None else prompts, model.device)

    def kl_of(coef: float) -> float:
        return p95(token_kls(model, tokenizer, method, coef, batches, T))

    return search(kl_of, target, tol, sign, start, max_iter, strategy)


# ---- files ------------------------------------------------------------------------------------

def save_calibration(path, results: dict[str, CalibrationResult]) -> None:
    write_json(path, {"format": FORMAT, "results": {key: asdict(r) for key, r in results.items()}})


def load_calibration(path) -> dict[str, CalibrationResult]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsteerError(f"cannot read calibration results '{path}' ({err}): recalibrate") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WeightsteerError(f"'{path}' is not a weightsteer calibration file: recalibrate")
    results = data.get("results")
    try:
        if not isinstance(results, dict) or set(results) != {"pos", "neg"}:
            raise ValueError("'results' must hold exactly 'pos' and 'neg'")
        return {side: _result_from_json(results[side]) for side in ("pos", "neg")}
    except (KeyError, TypeError, ValueError) as err:
        raise WeightsteerError(f"'{path}' is damaged ({err}): delete it and recalibrate") from None


def _result_from_json(value: dict) -> CalibrationResult:
    """One side's result; null numbers (how write_json stores NaN and infinities) read back as NaN."""
    def number(x):
        return math.nan if x is None else float(x)

    fields = {"coef", "kl", "iterations", "converged", "history", "target", "reason"}
    if not isinstance(value, dict) or not {"coef", "kl", "iterations", "converged"} <= set(value) <= fields:
        raise ValueError("each side needs exactly coef, kl, iterations, converged and optionally history, target, "
                         "reason")
    return CalibrationResult(number(value["coef"]), number(value["kl"]), int(value["iterations"]),
                             bool(value["converged"]), [(number(c), number(k)) for c, k in value.get("history", [])],
                             number(value.get("target")), str(value.get("reason", "")))


def calibrate_both_signs(model, tokenizer, method: SteeringMethod, target: float = 1.0, tol: float = 0.05,
                         prompts: list[str] | None = None, log=print, start: float = 1.0) -> dict[str, CalibrationResult]:
    """{"pos": +alpha, "neg": -alpha} results, each logged with its convergence. The POS search starts
    at |alpha| = start, the NEG search at the POS alpha when that converged."""
    results = {}
    for side, sign in (("pos", 1), ("neg", -1)):
        log(f"[calibrate] {method.name} {side}: target kl_p95 = {target}")
        r = results[side] = calibrate(model, tokenizer, method, target, tol, sign, start=start, prompts=prompts)
        start = abs(r.coef) if r.converged and r.coef != 0 else start
        state = "" if r.converged else f" (NOT converged: {r.reason})"
        log(f"[calibrate] {method.name} {side}: coef {r.coef:+.4g} kl_p95 {r.kl:.3f} after {r.iterations} "
            f"evaluations{state}")
    return results
