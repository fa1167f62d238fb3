"""The sweep's parts that need no model: units, seed folders, file transfer, across-seed numbers, options."""

import sys

import numpy as np
import pytest

from weightsteer.across_seeds import across_seed_table, spread
from weightsteer.behaviours import load_behaviour
from weightsteer.cli import main
from weightsteer.executors.files import changes, pack, unpack, write_outputs
from weightsteer.pipeline import behaviour_dir, seed_folder_name, seed_folders
from weightsteer.sweep import SweepSettings, Unit, sweep_units


def test_units_are_seed_major_and_prompt_baselines_run_once():
    settings = SweepSettings(load_behaviour("mood"), methods=("lora", "prompt", "mean_diff"), seeds=(3, 0))
    assert sweep_units(settings) == [Unit("lora", 3), Unit("prompt", 3), Unit("mean_diff", 3),
                                     Unit("lora", 0), Unit("mean_diff", 0)]


def test_seed_folders_are_siblings_and_seed_zero_is_the_plain_folder(tmp_path):
    assert seed_folder_name("mood", 0) == "mood" and seed_folder_name("mood", 2) == "mood-seed2"
    for name in ("mood", "mood-seed2", "mood-seed10", "mood-seed01", "mood-seedx", "moody", "mood_x-seed1"):
        (tmp_path / name).mkdir()
    (tmp_path / "mood-seed3").write_text("a file, not a run folder")
    assert seed_folders(tmp_path, "mood") == {0: tmp_path / "mood", 2: tmp_path / "mood-seed2",
                                              10: tmp_path / "mood-seed10"}


def test_files_round_trip_and_outputs_land_atomically_with_stamps_last(tmp_path, monkeypatch):
    run, scratch = tmp_path / "run", tmp_path / "scratch"
    (run / "m" / "adapters" / "pos").mkdir(parents=True)
    (run / "m" / "adapters" / "pos" / "old.bin").write_bytes(b"old")
    (run / "m" / "adapters" / ".pos.inputs").write_text("key1")
    (run / "data.jsonl").write_text("{}\n")
    (run / "m" / ".x.1234.tmp").mkdir()  # atomic_path's scratch of a killed writer: never shipped
    (run / "m" / ".x.1234.tmp" / "x").write_text("half")
    (run / "m" / "adapters" / ".pos.lock").write_text("1234")  # a process's own lock: never shipped
    (run / ".weightsteer.lock").write_text("1234")
    shipped = pack(run, [run / "m", run / "data.jsonl", run / "missing.json"])
    assert set(shipped) == {"m/adapters/pos/old.bin", "m/adapters/.pos.inputs", "data.jsonl"}

    unpack(scratch, shipped)
    (scratch / "m" / "adapters" / "pos" / "old.bin").unlink()  # a stage rebuilt the folder without it
    (scratch / "m" / "adapters" / "pos" / "new.bin").write_bytes(b"new")
    (scratch / "m" / "adapters" / ".pos.inputs").write_text("key2")
    files, removed = changes(scratch, shipped)
    assert files == {"m/adapters/pos/new.bin": b"new", "m/adapters/.pos.inputs": b"key2"}
    assert removed == ("m/adapters/pos/old.bin",)

    order = []
    import weightsteer.executors.files as files_module
    real = files_module.atomic_path
    monkeypatch.setattr(files_module, "atomic_path", lambda path: (order.append(path.name), real(path))[1])
    write_outputs(run, files, removed)
    assert order == ["new.bin", ".pos.inputs"]
    assert (run / "m" / "adapters" / "pos" / "new.bin").read_bytes() == b"new"
    assert not (run / "m" / "adapters" / "pos" / "old.bin").exists()
    assert (run / "m" / "adapters" / ".pos.inputs").read_text() == "key2"


def summary(method, dose, shifts, coefs):
    return {"target_kl": dose, "sides": {side: {"coef": c, "shift": {"mean": m, "lo": m - h, "hi": m + h}}
                                         for side, (m, h), c in zip(("pos", "neg"), shifts, coefs, strict=True)}}


def test_across_seed_numbers_match_numpy():
    values = [0.31, -0.2, 1.7]
    mean, sd = spread(values)
    assert mean == pytest.approx(np.mean(values)) and sd == pytest.approx(np.std(values, ddof=1))
    assert spread([2.0]) == (2.0, None)
    runs = {s: {"lora": [summary("lora", 1.0, [(m, 0.1 * (s + 1)), (-m, 0.2)], [c, -c])]}
            for s, m, c in zip((0, 1, 2), values, (2.0, 2.5, 3.0), strict=True)}
    lines = across_seed_table(runs)
    pos = next(line for line in lines if line.startswith("| lora | 1 | + |"))
    cells = [c.strip() for c in pos.strip("|").split("|")]
    assert cells[3] == "3"
    assert cells[4] == f"{np.mean([2.0, 2.5, 3.0]):+.3g} ± {np.std([2.0, 2.5, 3.0], ddof=1):.2g}"
    assert cells[5] == f"{np.mean(values):+.3f} ± {np.std(values, ddof=1):.3f}"
    assert cells[6] == f"±{np.mean([0.1, 0.2, 0.3]):.3f}"
    assert cells[7:] == [f"{v:+.3f}" for v in values]


def test_bad_seeds_and_executor_options_are_one_line_errors(capsys):
    for argv, words in ((["--seeds", "0,x"], "--seeds takes non-negative integers"),
                        (["--seeds", "-1"], "--seeds takes non-negative integers"),
                        (["--gpus-per-task", "1"], "--gpus-per-task is for the ray executor"),
                        (["--executor", "dask"], "invalid choice")):
        assert main(["sweep", "--methods", "prompt", "--no-cost", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1


def test_ray_executor_without_ray_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["sweep", "--methods", "prompt", "--no-cost", "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ('weightsteer: error: the ray executor needs Ray, which is not installed: '
                   'pip install "weightsteer[ray]"')


def test_unit_key_follows_what_decides_a_unit_and_not_which_other_seeds_run(tiny_llama, tmp_path):
    from dataclasses import replace

    from weightsteer.sweep_driver import SweepDriver

    model, tokenizer = tiny_llama
    mood = load_behaviour("mood")
    items = {"mood": mood.probe.load(None, 4)}
    base = SweepSettings(mood, methods=("lora", "mean_diff"), seeds=(0, 1), train={"steps": 2})

    def key(settings, unit):
        return SweepDriver(model, tokenizer, settings, items, tmp_path).unit_key(unit)

    lora1 = key(base, Unit("lora", 1))
    assert key(replace(base, seeds=(1,), methods=("lora",)), Unit("lora", 1)) == lora1
    assert len({lora1, key(base, Unit("lora", 0)), key(base, Unit("mean_diff", 1)),
                key(replace(base, train={"steps": 3}), Unit("lora", 1)),
                key(replace(base, target_kls=(0.5, 1.0)), Unit("lora", 1))}) == 5
    data = behaviour_dir(tmp_path, model, mood, 1) / "data.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text('{"side": "pos"}\n')
    assert key(base, Unit("lora", 1)) != lora1  # the seed's data is a shared input of its weight units
    assert key(base, Unit("mean_diff", 1)) == key(replace(base, seeds=(1,)), Unit("mean_diff", 1))
