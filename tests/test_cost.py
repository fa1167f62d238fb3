"""The cost of steering in a sweep: MMLU and coherence at each calibrated coefficient and for the
prompt baselines, the paired drop recomputed from the rows, and the report's trade-off section."""

import json

import numpy as np
import pytest
from conftest import SHARED_DATA

from weightsteer import WeightsteerError
from weightsteer.baselines.activation import load_activation_method
from weightsteer.behaviours import load_behaviour
from weightsteer.calibrate import load_calibration
from weightsteer.cost import CostSettings, parse_mmlu_n, spread
from weightsteer.evals import mmlu
from weightsteer.executors import LocalExecutor
from weightsteer.report import build_report
from weightsteer.sweep import SweepSettings
from weightsteer.sweep_driver import SweepDriver


def test_parse_mmlu_n_and_spread():
    assert parse_mmlu_n("all") is None and parse_mmlu_n("57") == 57
    for bad in ("0", "x"):
        with pytest.raises(WeightsteerError, match="--mmlu-n"):
            parse_mmlu_n(bad)
    assert spread(list(range(40)), 4) == [0, 10, 20, 30]
    assert spread([1, 2], 4) == [1, 2]


def test_sweep_measures_cost_at_every_condition_and_reports_it(tiny_llama, tmp_path):
    model, tokenizer = tiny_llama
    model.config.weightsteer_model = "tiny-model"
    behaviour = load_behaviour("mood")
    settings = SweepSettings(behaviour, ("mean_diff", "prompt"), (), (0.01, 0.02), limit=4, n_calibration=4,
                             n_boot=32, cost=CostSettings(mmlu_n=8, mmlu_dir=str(SHARED_DATA / "mmlu"),
                                                          n_coherence=3, max_new_tokens=8))
    items = {behaviour.probe.name: behaviour.probe.load(None, 4)}
    status = SweepDriver(model, tokenizer, settings, items, tmp_path, log=lambda _: None).run(
        LocalExecutor(lambda _: None))
    assert all(s["ok"] for s in status.values()), status
    root = tmp_path / "tiny-model" / "mood"
    items = mmlu.load(SHARED_DATA / "mmlu", 8)
    base_rows = {r["id"]: r for r in map(json.loads, (tmp_path / "tiny-model" / "base" / "mmlu.rows.jsonl")
                                         .read_text().splitlines())}
    assert sorted(base_rows) == sorted(i["id"] for i in items)
    method = load_activation_method(root / "mean_diff" / "vectors.safetensors")
    for dose in ("0.01", "0.02"):
        folder = root / "mean_diff" / f"kl-{dose}"
        cost = json.loads((folder / "eval" / "cost.json").read_text())
        cal = load_calibration(folder / "calibration.json")
        assert set(cost["sides"]) == {"pos", "neg"} and cost["target_kl"] == float(dose)
        for side, data in cost["sides"].items():
            assert data["coef"] == cal[side].coef and data["kl"] == cal[side].kl
            rows = [json.loads(line) for line in (folder / "eval" / f"mmlu.{side}.rows.jsonl").read_text().splitlines()]
            diffs = [r["logp_correct"] - base_rows[r["id"]]["logp_correct"] for r in rows]
            assert data["numbers"]["mmlu_logp_shift"]["mean"] == pytest.approx(np.mean(diffs))
            acc = np.mean([r["correct"] for r in rows]) - np.mean([r["correct"] for r in base_rows.values()])
            assert data["numbers"]["mmlu_shift"]["mean"] == pytest.approx(acc)
            # the rows are the model's at the calibrated coefficient, not the unsteered ones
            with method.apply(model, data["coef"]):
                direct = mmlu.score(model, tokenizer, items, progress=False)
            assert [r["logp_correct"] for r in rows] == pytest.approx([r["logp_correct"] for r in direct], abs=1e-5)
            coherent = (folder / "eval" / f"coherence.{side}.rows.jsonl").read_text().splitlines()
            assert len(coherent) == 3 == data["coherence"]["n"]
    prompt = json.loads((root / "prompt" / "eval" / "cost.json").read_text())
    assert list(prompt["sides"]) == ["pos"] and prompt["sides"]["pos"]["coef"] is None
    assert (root / "base" / "coherence.rows.jsonl").exists()

    report = build_report(tmp_path, "tiny-model", "mood", tmp_path / "report", "cmd").read_text()
    section = report.split("## Trade-off")[1].split("## Calibration")[0]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 1 + 2 * 2 + 1  # header, base, mean_diff 2 doses x 2 sides, prompt
    assert any(line.startswith("| mean_diff | 0.02 | - |") for line in table)
    assert (tmp_path / "report" / "mood-tradeoff-mmlu.png").exists()
    assert (tmp_path / "report" / "mood-tradeoff-kl.png").exists()
