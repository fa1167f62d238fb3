"""End to end on the embedded model: the mood positive control must steer, in both directions.

Small fixed settings (CPU runs are deterministic); a few minutes on 2 cores. If this fails, the
machinery is broken, whatever any null result on a harder behaviour says.
"""

import copy

import pytest

import weightsteer as ws
from weightsteer.behaviours import load_behaviour
from weightsteer.calibrate import kl_p95
from weightsteer.methods import WeightSteering
from weightsteer.pipeline import DataSettings, build_direction
from weightsteer.train import TrainConfig


@pytest.mark.slow
def test_mood_direction_moves_the_probe_both_ways(tmp_path):
    model, tokenizer = ws.load_model("smollm2-135m")
    data = DataSettings(n_samples=48, n_questions=24, max_new_tokens=48, seed=0)
    behaviour = load_behaviour("mood")
    _, delta = build_direction(model, tokenizer, behaviour, "lora", tmp_path, data,
                               TrainConfig(method="lora", steps=24, seed=0), log=lambda _: None)
    probe = copy.copy(behaviour.probe)
    probe.vader = False  # the word probe alone: the greedy replies are the slow part
    items = probe.load()

    def rows(alpha):
        with ws.steer(model, delta, alpha):
            return probe.score(model, tokenizer, items, progress=False)

    base = rows(0.0)
    up = probe.summarise(rows(1.0), base_rows=base)["shift"]["log_ratio"]
    down = probe.summarise(rows(-1.0), base_rows=base)["shift"]["log_ratio"]
    assert up["lo"] > 0, up  # more cheerful, beyond the bootstrap CI
    assert down["hi"] < 0, down  # more gloomy

    method = WeightSteering("lora", delta=delta)
    prompts = list(behaviour.calibration[:12])
    for sign in (1, -1):
        kls = [kl_p95(model, tokenizer, method, sign * a, prompts, T=12) for a in (0.25, 1.0, 2.0)]
        assert kls[0] < kls[1] < kls[2], kls
