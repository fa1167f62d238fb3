"""Seeds: each seed samples its own data, trains its own adapters and fits its own activation vectors,
in its own folder; `run --seeds` summarises the probe across seeds."""

import json
import re

import numpy as np
import pytest
from safetensors.torch import load_file

from weightsteer.baselines.activation import fit_questions
from weightsteer.behaviours import load_behaviour
from weightsteer.cli import main


def test_fit_questions_seed_zero_is_the_first_questions_and_other_seeds_sample_their_own():
    mood = load_behaviour("mood")
    pool = list(mood.questions)
    assert fit_questions(mood, 64, 0) == pool[:64]
    one, two = fit_questions(mood, 64, 1), fit_questions(mood, 64, 2)
    assert len(one) == len(set(one)) == 64 and set(one) <= set(pool)
    assert one != pool[:64] and one != two and one == fit_questions(mood, 64, 1)
    sycophancy = load_behaviour("sycophancy")  # a pool no larger than the sample: every seed uses all of it
    assert sorted(fit_questions(sycophancy, 64, 3)) == sorted(sycophancy.questions)


@pytest.mark.slow
def test_run_with_two_seeds(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--model", str(tiny_llama_dir), "--behavior", "mood", "--seeds", "0,1", "--n-samples", "4",
                 "--n-questions", "4", "--max-new-tokens", "6", "--steps", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    seed0, seed1 = out / "tiny" / "mood", out / "tiny" / "mood-seed1"
    data = [[json.loads(line) for line in (f / "data.jsonl").read_text().splitlines()] for f in (seed0, seed1)]
    assert [r["response"] for r in data[0]] != [r["response"] for r in data[1]]
    adapters = [load_file(str(f / "lora" / "adapters" / "pos" / "adapter_model.safetensors")) for f in (seed0, seed1)]
    assert any(not np.array_equal(adapters[0][k].numpy(), adapters[1][k].numpy()) for k in adapters[0])

    # the across-seed line, recomputed from each seed's own table
    ends = []
    for folder in (seed0, seed1):
        show = json.loads((folder / "lora" / "showcase.json").read_text())
        by_alpha = show["probes"]["mood"]["by_alpha"]
        ends.append([by_alpha[str(a)]["stat"]["mean"] for a in (show["alphas"][0], show["alphas"][-1])])
    low, high = np.array(ends).T
    line = next(line for line in printed.splitlines() if line.startswith("mood: at the lowest alpha"))
    numbers = [float(x) for x in re.findall(r"[+-]?\d+\.\d+", line)]
    expected = [low.mean(), low.std(ddof=1), high.mean(), high.std(ddof=1), (high - low).mean(),
                (high - low).std(ddof=1)]
    assert numbers == pytest.approx(expected, abs=0.006)
