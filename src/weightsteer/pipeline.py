"""data -> train (pos, neg) -> dW, as resumable stages in the run folder.

Layout (DESIGN.md): out/<model>/<behaviour>/data.jsonl is shared by every method of a behaviour;
out/<model>/<behaviour>/<method>/ holds adapters/pos, adapters/neg and delta.safetensors. That is
seed 0; seed s > 0 has the same layout in the sibling folder out/<model>/<behaviour>-seed<s>/, with
its own data (sampled with seed s) and its own adapters (initialised and shuffled with seed s). The data
are sampled under the behaviour's personas or, when the behaviour names a contrastive data file
(`--data`), read from it; either way the stamp records what they came from, so a changed persona or
data file rebuilds them and everything after.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .atomic import read_jsonl, write_jsonl
from .behaviours import Behaviour
from .contrast_data import read_contrast_data
from .delta import WeightDelta, model_fingerprint
from .generate import generate_contrastive
from .matmuls import compute_key
from .models import model_label
from .stages import file_hash, run_stage
from .train import TrainConfig, train_adapter

DATA_FORMAT = 2  # rows {side, prompt, response, ...}; format 1 called the prompt "question"
SAMPLER = 2  # 2: decode.py, a seed per response (1: model.generate, a seed per batch)


@dataclass
class DataSettings:
    n_personas: int = 1
    n_samples: int = 80  # responses per side
    n_questions: int = 40
    max_new_tokens: int = 96
    temperature: float = 0.8
    seed: int = 0
    batch_size: int = 80  # a whole side per batch: decoding on a CPU is bound by reading the weights


def seed_folder_name(behaviour_name: str, seed: int = 0) -> str:
    """Seed 0 keeps the plain behaviour folder (the runs made before seeds existed); seed s > 0 gets a sibling."""
    return behaviour_name if seed == 0 else f"{behaviour_name}-seed{seed}"


def seed_folders(model_root: Path, behaviour_name: str) -> dict[int, Path]:
    """{seed: folder} of every seed of a behaviour that has a folder under out/<model>/, lowest seed first."""
    found = {}
    for path in Path(model_root).glob(f"{behaviour_name}*"):
        match = re.fullmatch(re.escape(behaviour_name) + r"(?:-seed([1-9]\d*))?", path.name)
        if match and path.is_dir():
            found[int(match.group(1) or 0)] = path
    return dict(sorted(found.items()))


def behaviour_dir(out_root: Path, model, behaviour: Behaviour, seed: int = 0) -> Path:
    return Path(out_root) / model_label(model) / seed_folder_name(behaviour.name, seed)


def method_dir(out_root: Path, model, behaviour: Behaviour, method: str, seed: int = 0) -> Path:
    return behaviour_dir(out_root, model, behaviour, seed) / method


def data_inputs(model, behaviour: Behaviour, data: DataSettings) -> tuple[dict, list[dict] | None]:
    """(the data stage's inputs, the rows of the behaviour's own data file or None when sampling).

    A data file is read (and checked) here, before any stage runs, so a bad row stops the run
    before anything is written."""
    if behaviour.data is None:
        return {"model": model_fingerprint(model), **compute_key(model), **behaviour.generation_key(), **asdict(data),
                "format": DATA_FORMAT, "sampler": SAMPLER}, None
    rows = read_contrast_data(behaviour.data, behaviour.data_split)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return {"data": behaviour.data, "split": behaviour.data_split, "rows": digest, "format": DATA_FORMAT}, rows


def build_data(model, tokenizer, behaviour: Behaviour, out_root: Path, data: DataSettings, log=print) -> Path:
    path = behaviour_dir(out_root, model, behaviour, data.seed) / "data.jsonl"
    inputs, given = data_inputs(model, behaviour, data)

    def build(out: Path) -> None:
        if given is not None:
            counts = {side: sum(r["side"] == side for r in given) for side in ("pos", "neg")}
            log(f"[data] {counts['pos']} POS and {counts['neg']} NEG responses from {behaviour.data}")
            write_jsonl(out, given)
            return
        log(f"[data] sampling {data.n_samples} responses per side for '{behaviour.name}'")
        write_jsonl(out, generate_contrastive(
            model, tokenizer, behaviour, n_personas=data.n_personas, n_samples=data.n_samples,
            n_questions=data.n_questions, max_new_tokens=data.max_new_tokens, temperature=data.temperature,
            seed=data.seed, batch_size=data.batch_size))

    run_stage("data", path, inputs, build, log)
    return path


def build_direction(model, tokenizer, behaviour: Behaviour, method: str, out_root: Path,
                    data: DataSettings | None = None, train: TrainConfig | None = None,
                    log=print) -> tuple[Path, WeightDelta]:
    """Run every stage that is not up to date; return the run folder and its dW."""
    data = data or DataSettings()
    train = replace(train, method=method) if train else TrainConfig(method=method)
    data_path = build_data(model, tokenizer, behaviour, out_root, data, log)
    rows = read_jsonl(data_path)
    run = method_dir(out_root, model, behaviour, method, data.seed)
    for side in ("pos", "neg"):
        side_rows = [r for r in rows if r["side"] == side]
        inputs = {"data": file_hash(data_path), "train": train.key(), **compute_key(model)}
        run_stage(f"train {side}", run / "adapters" / side, inputs,
                  lambda out, rows=side_rows, side=side: train_adapter(
                      model, tokenizer, rows, out, train, desc=f"train {method} {side}"), log)
    delta_path = run / "delta.safetensors"
    inputs = {side: file_hash(run / "adapters" / side) for side in ("pos", "neg")}
    run_stage("delta", delta_path, inputs,
              lambda out: WeightDelta.from_adapters(model, run / "adapters" / "pos", run / "adapters" / "neg",
                                                    behaviour=behaviour.name).save(out), log)
    return run, WeightDelta.load(delta_path)
