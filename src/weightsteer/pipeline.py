"""generate -> train (pos, neg) -> dW, as resumable stages in the run folder.

Layout (DESIGN.md): out/<model>/<behaviour>/data.jsonl is shared by every method of a behaviour;
out/<model>/<behaviour>/<method>/ holds adapters/pos, adapters/neg and delta.safetensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .atomic import read_jsonl, write_jsonl
from .behaviours import get_behaviour
from .delta import WeightDelta, model_fingerprint
from .generate import generate_contrastive
from .models import model_label
from .stages import file_hash, run_stage
from .train import TrainConfig, train_adapter


@dataclass
class DataSettings:
    n_personas: int = 1
    n_samples: int = 80  # responses per side
    n_questions: int = 40
    max_new_tokens: int = 96
    temperature: float = 0.8
    seed: int = 0
    batch_size: int = 16


def behaviour_dir(out_root: Path, model, behaviour: str) -> Path:
    return Path(out_root) / model_label(model) / behaviour


def method_dir(out_root: Path, model, behaviour: str, method: str) -> Path:
    return behaviour_dir(out_root, model, behaviour) / method


def build_data(model, tokenizer, behaviour: str, out_root: Path, data: DataSettings, log=print) -> Path:
    path = behaviour_dir(out_root, model, behaviour) / "data.jsonl"
    inputs = {"model": model_fingerprint(model), "behaviour": behaviour, **asdict(data)}

    def build(out: Path) -> None:
        log(f"[data] sampling {data.n_samples} responses per side for '{behaviour}'")
        rows = generate_contrastive(model, tokenizer, get_behaviour(behaviour), n_personas=data.n_personas,
                                    n_samples=data.n_samples, n_questions=data.n_questions,
                                    max_new_tokens=data.max_new_tokens, temperature=data.temperature,
                                    seed=data.seed, batch_size=data.batch_size)
        write_jsonl(out, rows)

    run_stage("data", path, inputs, build, log)
    return path


def build_direction(model, tokenizer, behaviour: str, method: str, out_root: Path,
                    data: DataSettings | None = None, train: TrainConfig | None = None,
                    log=print) -> tuple[Path, WeightDelta]:
    """Run every stage that is not up to date; return the run folder and its dW."""
    data = data or DataSettings()
    train = replace(train, method=method) if train else TrainConfig(method=method)
    get_behaviour(behaviour)  # fail on an unknown name before any work
    data_path = build_data(model, tokenizer, behaviour, out_root, data, log)
    rows = read_jsonl(data_path)
    run = method_dir(out_root, model, behaviour, method)
    for side in ("pos", "neg"):
        side_rows = [r for r in rows if r["side"] == side]
        inputs = {"data": file_hash(data_path), "train": asdict(train)}
        run_stage(f"train {side}", run / "adapters" / side, inputs,
                  lambda out, rows=side_rows, side=side: train_adapter(
                      model, tokenizer, rows, out, train, desc=f"train {method} {side}"), log)
    delta_path = run / "delta.safetensors"
    inputs = {side: file_hash(run / "adapters" / side) for side in ("pos", "neg")}
    run_stage("delta", delta_path, inputs,
              lambda out: WeightDelta.from_adapters(model, run / "adapters" / "pos", run / "adapters" / "neg",
                                                    behaviour=behaviour).save(out), log)
    return run, WeightDelta.load(delta_path)
