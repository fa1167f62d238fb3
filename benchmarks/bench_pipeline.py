"""6. `weightsteer run` on the embedded model, stage by stage, plus a full tiny-mfv eval.

Runs what `weightsteer run --behavior honesty --adapter lora` runs, with the CLI's defaults (80
responses per side, 30 steps, rank 8), in a fresh run folder so that no stage is skipped. Stage times
come from wrapping pipeline.run_stage, the one function every stage goes through; the showcase
(probes and greedy answers at alpha -1, 0, +1) and a steered tiny-mfv eval over all 528 prompts are
timed around their calls.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from _common import Row, log

import weightsteer as ws
from weightsteer import pipeline
from weightsteer.behaviours import load_behaviour
from weightsteer.evals import tinymfv
from weightsteer.results import References
from weightsteer.showcase import showcase
from weightsteer.stages import file_hash
from weightsteer.train import TrainConfig

TARGET_S = 300.0
DATA_DIR = Path(os.environ.get("WEIGHTSTEER_TINY_MFV", Path(__file__).resolve().parents[2] / "shared" / "data" / "tiny-mfv"))


def measure(quick: bool, work: str) -> dict:
    times: dict[str, float] = {}
    started = time.perf_counter()
    if quick:  # what `weightsteer smoke` runs: a tiny random model, a few samples and steps
        from weightsteer.tiny import embedded_tokenizer, tiny_model

        model, tokenizer = tiny_model("llama", embedded_tokenizer())
    else:
        model, tokenizer = ws.load_model("smollm2-135m")
    times["load model"] = time.perf_counter() - started
    run_stage = pipeline.run_stage

    def timed_stage(name, output, inputs, build, log=print):
        t = time.perf_counter()
        try:
            return run_stage(name, output, inputs, build, log)
        finally:
            times[name] = time.perf_counter() - t

    def quiet(*args):
        print(*args, file=sys.stderr)

    data = pipeline.DataSettings(n_samples=8, n_questions=4, max_new_tokens=12, batch_size=8) if quick else None
    train = TrainConfig(method="lora", steps=3, lr=1e-2) if quick else None
    behaviour = load_behaviour("honesty")
    pipeline.run_stage = timed_stage
    try:
        run, delta = pipeline.build_direction(model, tokenizer, behaviour, "lora", Path(work), data, train, quiet)
    finally:
        pipeline.run_stage = run_stage
    t = time.perf_counter()
    refs = References(model, tokenizer, Path(work), behaviour, log=quiet)
    showcase(model, tokenizer, delta, behaviour, refs, run, file_hash(run / "delta.safetensors"),
             benches=[(behaviour.probe, behaviour.probe.load())], answer_tokens=8 if quick else 48,
             log=lambda *a: None)
    times["showcase"] = time.perf_counter() - t
    t = time.perf_counter()
    items = tinymfv.load(DATA_DIR, limit=4 if quick else None)
    with ws.steer(model, delta, 1.0):
        tinymfv.score(model, tokenizer, items, progress=False)
    times[f"tiny-mfv eval ({2 * len(items)} prompts)"] = time.perf_counter() - t
    log(f"pipeline: {times}")
    return times


def run(quick: bool, work: str) -> list[dict]:
    times = measure(quick, work)
    total = sum(times.values())
    top = max(times, key=times.get)
    size = "tiny-llama" if quick else "SmolLM2-135M"
    rows = [Row(f"6 weightsteer run: {stage}", size, f"{seconds:.1f} s", "-", None, "-", None,
                f"{seconds / total:.0%} of total") for stage, seconds in times.items()]
    rows.append(Row("6 weightsteer run + full tiny-mfv eval: total", size, f"{total:.0f} s", "-", None,
                    f"< {TARGET_S:.0f} s", total < TARGET_S, f"largest: {top} ({times[top] / total:.0%})"))
    return [vars(r) for r in rows]
