"""A new user's path through the CLI on a tiny model: write a behaviour file, check it, run it, and run
it again on their own contrastive data."""

import json

import pytest
from conftest import SHARED_DATA

from weightsteer.cli import main

RUN = ["--adapter", "lora", "--n-samples", "4", "--n-questions", "4", "--max-new-tokens", "6", "--steps", "2",
       "--target-kl", "0.01"]


def test_list_new_and_check(capsys, tmp_path, tiny_llama_dir):
    assert main(["behaviours"]) == 0
    listing = capsys.readouterr().out
    assert "mood: Cheerful vs gloomy" in listing and "probe: yes_no, 32 questions" in listing

    path = tmp_path / "tea.toml"
    assert main(["behaviours", "new", "tea", "--out", str(path)]) == 0
    assert main(["behaviours", "new", "tea", "--out", str(path)]) == 2  # never overwrites
    capsys.readouterr()
    assert main(["behaviours", "check", str(path), "--model", str(tiny_llama_dir), "--out", str(tmp_path / "out")]) == 0
    report = capsys.readouterr().out
    assert "tea (" in report and "2 persona pairs" in report
    assert "POS - NEG:" in report and "word_mass" in report


def test_run_a_behaviour_file_then_on_own_data(capsys, tmp_path, tiny_llama_dir):
    path = tmp_path / "tea.toml"
    main(["behaviours", "new", "tea", "--out", str(path)])
    out = tmp_path / "out"
    assert main(["run", "--model", str(tiny_llama_dir), "--behavior", str(path), "--out", str(out), *RUN,
                 "--mmlu-dir", str(SHARED_DATA / "mmlu"), "--mmlu-n", "4"]) == 0
    run = out / "tiny" / "tea" / "lora"
    shown = json.loads((run / "showcase.json").read_text())
    assert shown["probes"]["tea"]["headroom"]["contrast"]["mean"] is not None
    assert len(shown["alphas"]) == 3 and (run / "kl-0.01" / "calibration.json").is_file()
    printed = capsys.readouterr().out
    assert "== tea: probes" in printed
    # the capability line and the coherence flag at every alpha; at alpha 0 no change vs itself
    assert "MMLU acc (n=4, vs +0)" in printed and "coherence (degenerate/prompts)" in printed
    assert shown["cost"]["0.0"]["mmlu_shift"] is None and shown["cost"]["0.0"]["mmlu_acc"]["n"] == 4
    assert all(shown["cost"][str(a)]["coherence"]["n"] == 16 for a in shown["alphas"])

    generated = [json.loads(line) for line in (out / "tiny" / "tea" / "data.jsonl").read_text().splitlines()]
    data = tmp_path / "own.jsonl"
    data.write_text("".join(json.dumps({"prompt": r["prompt"], "side": r["side"], "response": r["response"] + " Tea!"})
                            + "\n" for r in generated))
    before = (run / "adapters" / "pos" / "adapter_model.safetensors").read_bytes()
    assert main(["run", "--model", str(tiny_llama_dir), "--behavior", str(path), "--data", str(data), "--out", str(out),
                 *RUN]) == 0
    used = [json.loads(line) for line in (out / "tiny" / "tea" / "data.jsonl").read_text().splitlines()]
    assert all(r["response"].endswith(" Tea!") for r in used) and len(used) == len(generated)
    assert (run / "adapters" / "pos" / "adapter_model.safetensors").read_bytes() != before  # retrained


@pytest.mark.parametrize("args, message", [
    (["--behavior", "{bad}"], "tea.toml: probe.prefil: unknown key"),
    (["--behavior", "{bad}", "--data", "{rows}"], "line 1: 'side' must be \"pos\" or \"neg\""),
])
def test_bad_files_stop_the_run_before_anything_is_written(capsys, tmp_path, tiny_llama_dir, args, message):
    bad = tmp_path / "tea.toml"
    main(["behaviours", "new", "tea", "--out", str(bad)])
    bad.write_text(bad.read_text().replace("prefill", "prefil") if "--data" not in args else bad.read_text())
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"side": "up", "prompt": "q", "response": "r"}\n')
    capsys.readouterr()
    argv = [a.format(bad=bad, rows=rows) for a in args]
    assert main(["run", "--model", str(tiny_llama_dir), "--out", str(tmp_path / "out"), *argv, *RUN]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()
