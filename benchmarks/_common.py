"""What every benchmark shares: model sizes, fast random models and adapters, timing, fresh processes.

Weights do not change speed, so the large models are random: Qwen3 configs with the published shapes,
filled with seeded uniform noise (drawing 4e9 normals would take minutes; uniform is 2x cheaper and
the same seed gives the same model in every process, which PiSSA adapters need). Everything is float32
on CPU: `models.default_dtype` picks float32 where there is no bf16-capable GPU.

Memory is measured in a fresh interpreter per measurement: tracemalloc does not see torch's
allocator, and a process that already ran something else has a warm heap, so RSS growth there would
say little.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import torch

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent

GiB = 2**30
# Qwen3 shapes from the published configs (vocab 151936, head dim 128, tied embeddings).
QWEN3 = {
    "0.6B": dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 intermediate_size=3072),
    "1.7B": dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 intermediate_size=6144),
    "4B": dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=9728),
    # --quick only: the same architecture, small enough for a sanity run in seconds
    "quick": dict(hidden_size=256, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=768),
}
RANK = 32


@dataclass
class Row:
    """One line of the results table; `ratio` is always 'how many times better ours is'."""

    benchmark: str
    size: str
    ours: str
    naive: str
    ratio: float | None
    target: str
    met: bool | None  # None: no target for this line (context only)
    note: str = ""


def rows_to_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


def log(*args) -> None:
    print("[bench]", *args, file=sys.stderr, flush=True)


# ---- models and adapters ----------------------------------------------------------------------

def qwen3_config(size: str):
    from transformers import Qwen3Config

    return Qwen3Config(vocab_size=151936 if size != "quick" else 32000, head_dim=128 if size != "quick" else 64,
                       tie_word_embeddings=True, max_position_embeddings=4096, **QWEN3[size])


def qwen3_bytes(size: str) -> int:
    """float32 size of the model, counted on the meta device (no memory used)."""
    from transformers import Qwen3ForCausalLM

    with torch.device("meta"):
        return param_bytes(Qwen3ForCausalLM(qwen3_config(size)))


def qwen3_model(size: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A random Qwen3 of the published shape, built without transformers' (slow) weight init."""
    from transformers import Qwen3ForCausalLM
    from transformers.initialization import no_init_weights

    config = qwen3_config(size)
    with no_init_weights():
        model = Qwen3ForCausalLM(config)
    model.tie_weights()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:  # RMSNorm scales
                p.fill_(1.0)
            else:  # uniform with std 0.02, the config's initializer_range
                p.uniform_(-0.0346, 0.0346, generator=gen)
    model.config.weightsteer_model = f"qwen3-{size}-random"
    return model.to(dtype).eval()


def param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def random_adapter(model, method: str, out_dir: Path, seed: int, rank: int = RANK) -> None:
    """Save an adapter of `method`: PEFT's init (the same for both sides) plus seeded noise, via
    weightsteer.tiny.noisy_adapter, which copies no targeted weights (at 4B that copy alone is 7 GB).

    A PiSSA pair is made as a LoRA pair whose config then says PiSSA: a PiSSA adapter holds the same
    two factors, and what differs, PEFT's load path (an SVD of every targeted weight to rebuild the
    residual base), is what loading it runs. Making it for real would add that SVD twice more here.
    """
    import json

    from weightsteer.tiny import noisy_adapter

    noisy_adapter(model, "lora" if method == "pissa" else method, out_dir, seed, rank)
    if method == "pissa":
        config_file = out_dir / "adapter_config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "init_lora_weights": "pissa"}))


def make_adapters(model, methods, root: Path, rank: int = RANK) -> dict[str, tuple[Path, Path]]:
    """A saved (pos, neg) pair of random adapters per method, on the middle layers' seven Linear types."""
    pairs = {}
    for method in methods:
        started = time.perf_counter()
        pairs[method] = (root / f"{method}-pos", root / f"{method}-neg")
        for seed, out in enumerate(pairs[method], start=1):
            random_adapter(model, method, out, seed, rank)
        log(f"made {method} adapters (rank {rank}) in {time.perf_counter() - started:.1f} s")
    return pairs


# ---- measuring --------------------------------------------------------------------------------

def rss() -> int:
    return psutil.Process().memory_info().rss


def measure(fn, *args, **kwargs):
    """(result, seconds, peak extra RSS in bytes) of one call.

    The peak is the larger of a 1 ms RSS sampler and the kernel's high-water mark (ru_maxrss) when
    the call raised it, so a short spike between samples is still counted.
    """
    base, maxrss_before = rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak, done = [base], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    top = max(peak[0], rss(), maxrss_after if maxrss_after > maxrss_before else 0)
    return result, seconds, top - base


def best_of(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls: on a shared machine noise only ever adds time."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def matmul_peak(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """This machine's achievable matrix-multiply FLOP/s: the best of a few n x n @ n x n products."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    return 2 * n**3 / best_of(lambda: a @ b, repeats)


def in_subprocess(module: str, func: str, *args, timeout: float = 1800):
    """Call benchmarks/<module>.py:<func>(*args) in a fresh interpreter; return its JSON result.

    A fresh process per memory measurement (and per benchmark) keeps one measurement's heap out of
    the next. Progress goes to stderr as usual; the result comes back through a file.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        code = (f"import json, sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import {module}; "
                f"r = {module}.{func}(*json.loads(sys.argv[1])); open(sys.argv[2], 'w').write(json.dumps(r))")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(list(args)), str(out)], env=env,
                              timeout=timeout, stdout=sys.stderr)  # on timeout: kills the child, raises
        if proc.returncode != 0:
            raise RuntimeError(f"{module}.{func}{args} failed with exit code {proc.returncode}")
        return json.loads(out.read_text())


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_bytes(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 4 else f"{n / 2**20:.0f} MiB"
