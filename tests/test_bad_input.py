"""Bad input, table-driven, through the CLI in-process: every case exits 2 with one line on stderr
naming the problem, no traceback, and leaves every folder as it was (nothing written, nothing replaced).

One tiny model folder, direction and adapters are made once for the module; each case may damage a
copy of something in its own folder first. Nothing is trained; no case downloads anything.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from adapter_helpers import adapter_pair
from conftest import TINY_MFV_DIR, make_tiny

import weightsteer as ws
from weightsteer.cli import main
from weightsteer.tiny import noisy_adapter


@pytest.fixture(scope="module")
def fx(tmp_path_factory, base_tokenizer):
    """base/ (a tiny llama, loaded back from its folder), d.safetensors made on it, lora-pos/neg
    adapters of it, and other/ (the same architecture with other weights) with an adapter ft-other/."""
    root = tmp_path_factory.mktemp("fx")
    model, tok = make_tiny("llama", base_tokenizer)
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    model, tok = ws.load_model(str(root / "base"), device="cpu")
    pos, neg = adapter_pair(model, "lora", root)
    ws.WeightDelta.from_adapters(model, pos, neg).save(root / "d.safetensors")
    other, tok2 = make_tiny("llama", base_tokenizer, seed=4)
    other.save_pretrained(root / "other")
    tok2.save_pretrained(root / "other")
    other, _ = ws.load_model(str(root / "other"), device="cpu")
    noisy_adapter(other, "lora", root / "ft-other", seed=3)
    return root


def state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- what each case damages first (in its own folder `case`, beside the shared fixtures) ----------

def direction_with(fx: Path, case: Path, *, header=None, tensors=None) -> None:
    """case/d.safetensors: the fixture's direction with its header or tensors changed."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(fx / "d.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["weightsteer"])
    original = load_file(str(fx / "d.safetensors"))
    new_meta = header(meta) if header else meta
    new_tensors = tensors(original) if tensors else original
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in new_tensors.items()}, str(case / "d.safetensors"),
              metadata={"weightsteer": json.dumps(new_meta)})


def first_b(tensors: dict) -> str:
    return next(k for k in tensors if k.endswith(":B"))


def model_folder(fx: Path, case: Path, *, config=None, drop_tokenizer=False) -> None:
    """case/m: a copy of the base model folder with config.json replaced or the tokenizer removed."""
    shutil.copytree(fx / "base", case / "m")
    if config is not None:
        (case / "m" / "config.json").write_text(config)
    if drop_tokenizer:
        for p in (case / "m").glob("*token*"):
            p.unlink()
        (case / "m" / "chat_template.jinja").unlink(missing_ok=True)


def calibrated(fx: Path, case: Path, results) -> None:
    """case/d.safetensors with a kl-1/calibration.json holding `results`."""
    shutil.copy(fx / "d.safetensors", case / "d.safetensors")
    (case / "kl-1").mkdir()
    (case / "kl-1" / "calibration.json").write_text(json.dumps({"format": "weightsteer.calibration/1",
                                                                "results": results}))


def tinymfv_copy(case: Path, edit) -> None:
    """case/mfv: the tiny-mfv files with the first row of one replaced by edit(row): a row, or raw bytes."""
    (case / "mfv").mkdir()
    for src in TINY_MFV_DIR.glob("*.jsonl"):
        lines = src.read_bytes().splitlines()
        if "other" in src.name:
            first = edit(json.loads(lines[0]))
            lines[0] = first if isinstance(first, bytes) else json.dumps(first).encode()
        (case / "mfv" / src.name).write_bytes(b"\n".join(lines) + b"\n")


def adapter_copy(fx: Path, case: Path, damage) -> None:
    shutil.copytree(fx / "lora-pos", case / "a")
    damage(case / "a")


def sweep_folder(case: Path, damage) -> None:
    """case/out/base/honesty with one finished-looking method folder, then damaged."""
    root = case / "out" / "base" / "honesty"
    (root / "lora" / "kl-1" / "eval").mkdir(parents=True)
    (root / "lora" / "kl-1" / "eval" / "honesty.summary.json").write_text(json.dumps({"sides": {}}))
    (root / "sweep.json").write_text(json.dumps({"lora": {"ok": True}}))
    damage(root)


CALIBRATION_SIDE = {"coef": 1.0, "kl": 1.0, "iterations": 3, "converged": True}

# (id, argv with {fx} and {case}, what the error must say, setup(fx, case) or None)
CASES = [
    # options, refused while the command line is read
    ("limit-0", "eval sycophancy --limit 0", "--limit: must be at least 1", None),
    ("limit-negative", "eval sycophancy --limit -2", "--limit: must be at least 1", None),
    ("batch-size-0", "eval sycophancy --batch-size 0", "--batch-size: must be at least 1", None),
    ("n-boot-0", "eval sycophancy --n-boot 0", "--n-boot: must be at least 1", None),
    ("tol-nan", "calibrate --delta {fx}/d.safetensors --tol nan", "--tol: must be a finite number", None),
    ("tol-1", "calibrate --delta {fx}/d.safetensors --tol 1", "--tol: must be a relative tolerance", None),
    ("target-kl-inf", "calibrate --delta {fx}/d.safetensors --target-kl inf", "positive, finite numbers", None),
    ("target-kl-0", "run --target-kl 0", "positive, finite numbers", None),
    ("target-kl-negative", "run --target-kl -1", "positive, finite numbers", None),
    ("layers-reversed", "run --layers 0.9-0.1", "layer span must satisfy", None),
    ("lr-nan", "run --lr nan", "--lr: must be a finite number above 0", None),
    ("steps-0", "run --steps 0", "--steps: must be at least 1", None),
    ("pos-only-bogus", "sweep --pos-only bogus --evals ''", "--pos-only names bogus", None),
    ("n-calibration-0", "sweep --n-calibration 0", "--n-calibration: must be at least 1", None),
    ("alpha-without-delta", "eval sycophancy --alpha 1", "give it with --delta", None),
    ("top-0", "similarity --delta {fx}/d.safetensors --adapter {fx}/lora-pos --top 0", "--top: must be at least 1",
     None),
    ("model-empty", "run --model ''", "is not a local folder, an embedded model", None),
    ("model-invalid-id", "run --model 'not a valid id!'", "valid Hugging Face id", None),
    # model folders transformers cannot load
    ("config-empty", "eval sycophancy --model {case}/m --out {case}/ev", "could not load the model",
     lambda fx, case: model_folder(fx, case, config="{}")),
    ("config-unknown-type", "eval sycophancy --model {case}/m --out {case}/ev", "could not load the model",
     lambda fx, case: model_folder(fx, case, config='{"model_type": "telepathy"}')),
    ("no-tokenizer", "eval sycophancy --model {case}/m --out {case}/ev", "could not load the model",
     lambda fx, case: model_folder(fx, case, drop_tokenizer=True)),
    # crafted direction files
    ("header-list", "eval sycophancy --delta {case}/d.safetensors --alpha 1 --model {fx}/base",
     "without weightsteer's header", lambda fx, case: direction_with(fx, case, header=lambda m: [m])),
    ("header-no-modules", "eval sycophancy --delta {case}/d.safetensors --alpha 1 --model {fx}/base",
     "no list of modules", lambda fx, case: direction_with(fx, case, header=lambda m: {
         k: v for k, v in m.items() if k != "modules"})),
    ("header-modules-5", "eval sycophancy --delta {case}/d.safetensors --alpha 1 --model {fx}/base",
     "no list of modules", lambda fx, case: direction_with(fx, case, header=lambda m: {**m, "modules": 5})),
    ("ranks-differ", "eval sycophancy --delta {case}/d.safetensors --alpha 1 --model {fx}/base",
     "do not multiply", lambda fx, case: direction_with(fx, case, tensors=lambda t: {
         **t, first_b(t): t[first_b(t)][:, :-1]})),
    ("integer-tensors", "eval sycophancy --delta {case}/d.safetensors --alpha 1 --model {fx}/base",
     "not floating point", lambda fx, case: direction_with(fx, case, tensors=lambda t: {
         **t, first_b(t): t[first_b(t)].to(torch.int32)})),
    ("nan-direction", "eval sycophancy --delta {case}/d.safetensors --alpha 1 --model {fx}/base",
     "NaN or infinite", lambda fx, case: direction_with(fx, case, tensors=lambda t: {
         **t, first_b(t): torch.full_like(t[first_b(t)], float("nan"))})),
    # calibration files
    ("calibration-no-results", "eval sycophancy --delta {case}/d.safetensors --calibrated pos --model {fx}/base",
     "is damaged", lambda fx, case: calibrated(fx, case, None)),
    ("calibration-no-pos", "eval sycophancy --delta {case}/d.safetensors --calibrated pos --model {fx}/base",
     "is damaged", lambda fx, case: calibrated(fx, case, {"neg": CALIBRATION_SIDE})),
    ("calibration-extra-keys", "eval sycophancy --delta {case}/d.safetensors --calibrated pos --model {fx}/base",
     "is damaged", lambda fx, case: calibrated(fx, case, {"pos": {**CALIBRATION_SIDE, "bogus": 1},
                                                          "neg": CALIBRATION_SIDE})),
    # benchmark data
    ("mfv-invalid-utf8", "eval tinymfv --data-dir {case}/mfv", "must be UTF-8",
     lambda fx, case: tinymfv_copy(case, lambda row: json.dumps(row).encode().replace(b"You", b"\xff"))),
    ("mfv-foundation-list", "eval tinymfv --data-dir {case}/mfv", "'foundation_coarse' must be a non-empty string",
     lambda fx, case: tinymfv_copy(case, lambda row: {**row, "foundation_coarse": ["Care"]})),
    ("mfv-foundation-null", "eval tinymfv --data-dir {case}/mfv", "'foundation_coarse' must be a non-empty string",
     lambda fx, case: tinymfv_copy(case, lambda row: {**row, "foundation_coarse": None})),
    ("mfv-id-list", "eval tinymfv --data-dir {case}/mfv", "'id' must be a non-empty string",
     lambda fx, case: tinymfv_copy(case, lambda row: {**row, "id": [1]})),
    ("mfv-text-number", "eval tinymfv --data-dir {case}/mfv", "'text' must be a non-empty string",
     lambda fx, case: tinymfv_copy(case, lambda row: {**row, "text": 5})),
    ("mfv-huge-text", "eval tinymfv --data-dir {case}/mfv", "characters long",
     lambda fx, case: tinymfv_copy(case, lambda row: {**row, "text": "x" * 210_000})),
    # similarity inputs
    ("adapter-config-corrupt", "similarity --delta {fx}/d.safetensors --adapter {case}/a", "is damaged",
     lambda fx, case: adapter_copy(fx, case, lambda a: (a / "adapter_config.json").write_text("{not json"))),
    ("adapter-weights-truncated", "similarity --delta {fx}/d.safetensors --adapter {case}/a",
     "adapter_model.safetensors", lambda fx, case: adapter_copy(fx, case, lambda a: (
         a / "adapter_model.safetensors").write_bytes((a / "adapter_model.safetensors").read_bytes()[:200]))),
    ("adapter-of-another-model", "similarity --delta {fx}/d.safetensors --adapter {fx}/ft-other", "was trained on",
     None),
    # report inputs
    ("summary-corrupt", "report --behavior honesty --model base --out {case}/out --to {case}/report",
     "is damaged or unreadable", lambda fx, case: sweep_folder(case, lambda root: (
         root / "lora" / "kl-1" / "eval" / "honesty.summary.json").write_text("{\"sides\""))),
    ("sweep-json-corrupt", "report --behavior honesty --model base --out {case}/out --to {case}/report",
     "is damaged or unreadable", lambda fx, case: sweep_folder(case, lambda root: (
         root / "sweep.json").write_text("[1, 2"))),
    ("sweep-json-list", "report --behavior honesty --model base --out {case}/out --to {case}/report",
     "is damaged", lambda fx, case: sweep_folder(case, lambda root: (root / "sweep.json").write_text("[1, 2]"))),
    # outputs that would destroy something, or cannot be written
    ("export-into-base", "export --delta {fx}/d.safetensors --alpha 1 --format merged --model {fx}/base "
     "--out {fx}/base", "base model's own folder", None),
    ("export-into-foreign", "export --delta {fx}/d.safetensors --alpha 1 --format merged --model {fx}/base "
     "--out {fx}/other", "not written by weightsteer", None),
    ("compose-over-weights", "compose {fx}/d.safetensors:2 --out {fx}/base/model.safetensors",
     "not a weightsteer direction", None),
    ("out-under-a-file", "eval sycophancy --limit 2 --model {fx}/base --out-root {case}/file/x --out {case}/file/y",
     "cannot use", lambda fx, case: (case / "file").write_text("I am a file")),
]


@pytest.mark.parametrize(("argv", "pattern", "setup"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(capsys, monkeypatch, tmp_path, fx, argv, pattern, setup):
    import shlex

    case = tmp_path / "case"
    case.mkdir()
    if setup:
        setup(fx, case)
    monkeypatch.chdir(tmp_path)  # a default --out would land here
    before_fx, before_case = state(fx), state(case)
    capsys.readouterr()
    code = main(shlex.split(argv.format(fx=fx, case=case)))
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith(("Loading weights", "weightsteer: warning"))]
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("weightsteer: error: "), err
    assert "Traceback" not in err[0] and pattern in err[0], err[0]
    assert state(fx) == before_fx and state(case) == before_case
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]


# ---- a second writer of a run folder is refused -----------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from weightsteer.locks import folder_lock
with folder_lock(Path(sys.argv[1])):
    Path(sys.argv[2]).write_text("locked")
    time.sleep(60)
"""


def test_a_second_writer_of_a_folder_is_refused(capsys, fx, tmp_path):
    case = tmp_path / "case"
    shutil.copy(fx / "d.safetensors", tmp_path / "d.safetensors")
    ready = tmp_path / "ready"
    env = {"PYTHONPATH": str(Path(ws.__file__).parents[1]), "PATH": "/usr/bin:/bin"}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(ready)], env=env)
    try:
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline and holder.poll() is None:
            time.sleep(0.05)
        assert ready.exists()
        before = state(tmp_path)
        capsys.readouterr()
        code = main(["calibrate", "--delta", str(tmp_path / "d.safetensors"), "--model", str(fx / "base")])
        err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Loading")]
        assert code == 2 and len(err) == 1, err
        assert f"pid {holder.pid}" in err[0] and "is writing to" in err[0]
        assert state(tmp_path) == before and not case.exists()
    finally:
        holder.kill()
        holder.wait()


# ---- a hub that accepts connections and never answers -----------------------------------------

@pytest.fixture
def silent_hub(monkeypatch):
    """A local endpoint that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *args, **kwargs: None)
    yield
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.parametrize("argv", [["eval", "tinymfv"], ["run", "--model", "no-such-org/no-such-model"]],
                         ids=["dataset", "model"])
def test_a_silent_hub_fails_in_bounded_time(capsys, monkeypatch, tmp_path, silent_hub, argv):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    started = time.time()
    code = main(argv)
    elapsed = time.time() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "127.0.0.1 did not answer within 5 s" in err[0]
    assert elapsed < 15, elapsed
    assert list(tmp_path.iterdir()) == []


def test_hub_client_has_read_and_connect_timeouts():
    import huggingface_hub

    from weightsteer.hub import CONNECT_TIMEOUT, READ_TIMEOUT, bound_requests

    bound_requests()
    huggingface_hub.close_session()  # the next session is made by the bounded factory
    timeout = huggingface_hub.get_session().timeout
    assert (timeout.read, timeout.connect) == (READ_TIMEOUT, CONNECT_TIMEOUT)


# ---- legitimate results that used to crash or hide their cause --------------------------------

def test_a_model_that_never_answers_tinymfv_is_a_result_not_a_crash(capsys, fx, tmp_path):
    """A random tiny model puts almost no mass on true/false: every cell falls below the floor."""
    code = main(["eval", "tinymfv", "--data-dir", str(TINY_MFV_DIR), "--model", str(fx / "base"), "--limit", "3",
                 "--out", str(tmp_path / "ev"), "--out-root", str(tmp_path / "out")])
    assert code == 0
    assert "no logit_wrongness: 0 of 6 cells kept; the model does not answer the probe" in capsys.readouterr().out
    summary = json.loads((tmp_path / "ev" / "tinymfv.base.summary.json").read_text())
    assert summary["summary"]["n_dropped"] == 6 and summary["summary"]["logit_wrongness"]["mean"] is None


def test_when_every_method_fails_each_cause_is_named(capsys, monkeypatch, fx, tmp_path):
    from weightsteer.errors import WeightsteerError
    from weightsteer.sweep import UnitWork

    def broken(self, unit):
        if unit.method == "lora":
            raise WeightsteerError("lora: training diverged")
        raise RuntimeError("dora: out of memory")

    monkeypatch.setattr(UnitWork, "run_method", broken)
    capsys.readouterr()
    code = main(["sweep", "--methods", "lora,dora", "--evals", "", "--no-cost", "--limit", "2", "--model", str(fx / "base"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "  lora (seed 0): WeightsteerError: lora: training diverged" in err
    assert "  dora (seed 0): RuntimeError: dora: out of memory" in err
    assert err.strip().splitlines()[-1] == ("weightsteer: error: every unit failed (causes listed above); "
                                            "details in sweep.json")


def test_ctrl_c_closes_progress_bars_before_its_message(capsys, monkeypatch):
    from tqdm.auto import tqdm

    bars = []

    def interrupted(args):
        bars.append(tqdm(total=10, desc="train"))
        bars[0].update(3)
        raise KeyboardInterrupt

    monkeypatch.setattr("weightsteer.commands.run.cmd_smoke", interrupted)
    capsys.readouterr()
    assert main(["smoke"]) == 130
    err = capsys.readouterr().err
    assert bars[0].disable  # closed: nothing redraws after the message
    assert err.rstrip().endswith("weightsteer: interrupted; finished stages are kept and the next run resumes")
