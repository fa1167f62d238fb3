"""--preset seed: every setting the preset applies reaches the sweep's settings, explicit options win, and
the report states which settings match the seed's."""

import json

import pytest

from weightsteer import presets
from weightsteer.cli import parse_args
from weightsteer.errors import WeightsteerError

# The seed's values, typed out from its code (wassname/weight-steering src/ws/train.py TrainCfg and
# steering-lite's trad_care sweep), not read from presets.py.
SEED_VALUES = {"model": "Qwen/Qwen3-0.6B", "behavior": "trad_care", "n_personas": 6, "target_kl": "1",
               "max_think": 64, "layers": "0.3-0.8", "rank": 32, "lr": 2e-4, "weight_decay": 0.01,
               "warmup_steps": 5, "lr_schedule": "linear", "train_batch_size": 4, "grad_accum": 4,
               "max_length": 512, "activation_scale": "unit", "oft_block_size": 8,
               "ia3_modules": "k_proj,v_proj,down_proj", "ia3_layers": "0-1"}


def test_seed_preset_sets_the_seeds_values():
    args = parse_args(["sweep", "--preset", "seed"])
    assert {k: getattr(args, k) for k in SEED_VALUES} == SEED_VALUES
    plain = parse_args(["sweep"])
    assert (plain.model, plain.rank, plain.max_think, plain.activation_scale) != ("Qwen/Qwen3-0.6B", 32, 64, "unit")


def test_explicit_options_win_wherever_they_are():
    args = parse_args(["sweep", "--rank", "8", "--preset", "seed", "--max-think", "0"])
    assert (args.rank, args.max_think, args.grad_accum) == (8, 0, 4)


def test_seed_preset_reaches_the_training_config():
    from weightsteer.commands.run import settings_from

    args = parse_args(["sweep", "--preset", "seed"])
    args.adapter = "lora"
    _, train = settings_from(args)
    assert (train.rank, train.lr, train.layer_span, train.grad_accum, train.batch_size, train.weight_decay,
            train.warmup_steps, train.schedule, train.max_length, train.oft_block) == (
        32, 2e-4, (0.3, 0.8), 4, 4, 0.01, 5, "linear", 512, 8)


def test_ia3_gets_the_forks_modules_on_every_layer_and_the_others_do_not():
    from weightsteer.commands.run import ia3_overrides, settings_from

    args = parse_args(["sweep", "--preset", "seed"])
    assert ia3_overrides(args) == {"modules": ("k_proj", "v_proj", "down_proj"), "layer_span": (0.0, 1.0)}
    args.adapter = "ia3"
    _, ia3 = settings_from(args)
    args.adapter = "lora"
    _, lora = settings_from(args)
    assert (ia3.modules, ia3.layer_span) == (("k_proj", "v_proj", "down_proj"), (0.0, 1.0))
    assert (lora.modules, lora.layer_span) == (("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj"), (0.3, 0.8))
    assert ia3_overrides(parse_args(["sweep"])) == {}


def test_table_states_what_matches_and_what_does_not():
    rows = presets.table("seed")
    by_name = {r["setting"]: r for r in rows}
    assert by_name["LoRA rank / alpha / dropout"]["matches"] is True
    assert by_name["training length"]["matches"] is False
    assert by_name["training length"]["weightsteer"] == "not reproduced"
    text = "\n".join(presets.markdown(rows))
    assert "| training length | not reproduced |" in text and "no: weightsteer trains --steps" in text
    json.dumps(rows)  # written by the sweep as JSON


def test_table_shows_what_a_run_overrode():
    args = parse_args(["sweep", "--preset", "seed", "--model", "other-model", "--max-think", "8"])
    rows = {r["setting"]: r for r in presets.table("seed", {k: getattr(args, k) for k in presets.defaults("seed")})}
    assert rows["model"]["weightsteer"] == "other-model" and rows["model"]["matches"] is False
    assert rows["model"]["note"] == "overridden on the command line"
    assert rows["tiny-mfv probe"]["weightsteer"] == "8" and not rows["tiny-mfv probe"]["matches"]
    assert rows["learning rate"]["matches"] is True


def test_unknown_preset_is_an_error():
    with pytest.raises(WeightsteerError, match="invalid choice: 'paper'"):
        parse_args(["sweep", "--preset", "paper"])
    with pytest.raises(WeightsteerError, match="unknown preset"):
        presets.defaults("paper")


def test_docs_show_the_current_table():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    assert "\n".join(presets.markdown(presets.table("seed"))) in doc


def test_report_prints_the_table_a_preset_sweep_wrote(tmp_path):
    from weightsteer.atomic import write_json
    from weightsteer.report import preset_section

    assert preset_section(tmp_path) == []
    write_json(tmp_path / "preset.json", {"preset": "seed", "settings": presets.table("seed")})
    text = "\n".join(preset_section(tmp_path))
    assert text.startswith("## Settings beside the seed's (`--preset seed`)")
    assert "| LoRA rank / alpha / dropout | 32 |" in text and "| training length | not reproduced |" in text
