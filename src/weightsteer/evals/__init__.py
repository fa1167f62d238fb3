"""The benchmarks, all behind one interface, so the CLI, the sweep and calibration treat them alike.

A benchmark is any object with:
- name: what its results files are called;
- load(data_dir=None, limit=None) -> list of items (from the hub, or a local folder described in the
  module's docstring; `limit` takes a seeded, stratified subset, evals/sampling.py); bad data raises
  WeightsteerError naming the file and row.
- score(model, tokenizer, items, *, system=None, user_prefix=None, batch_size=16, progress=True)
  -> one JSON-able dict per row, each with an `id`. It never touches weights: steer around the call.
- summarise(rows, base_rows=None, n_boot=256, seed=0) -> JSON-able summary with bootstrap 95%
  intervals ({"mean", "lo", "hi", "n"}); with base_rows also "shift", paired against the base run.
- HEADLINE_KEY, and stat(summary, *, shift=False) -> {"mean", "lo", "hi"}: the number report tables
  show (tinymfv mean logit(wrongness); airisk truthfulness log-ratio), or its paired shift vs base.

The modules tinymfv, airisk and mmlu (capability: what steering costs) are benchmarks; so is every behaviour's probe (probes/), and the
probes of the built-in behaviours can be asked for by the behaviour's name (`--evals sycophancy`).
si.py (surgical informedness) and stats.py (bootstrap) work on the rows of any of them.
"""

from . import airisk, mmlu, tinymfv

BENCHMARKS = {module.name: module for module in (tinymfv, airisk, mmlu)}


def benchmark(name: str):
    """The benchmark a name on the command line means: a module above, or the probe of a built-in
    behaviour or of a behaviour file (a path ending in .toml)."""
    from ..behaviours import builtin_names, load_behaviour
    from ..errors import WeightsteerError

    if name in BENCHMARKS:
        return BENCHMARKS[name]
    if name in builtin_names() or name.endswith(".toml"):
        behaviour = load_behaviour(name)
        if behaviour.probe is None:
            raise WeightsteerError(f"behaviour '{behaviour.name}' ({behaviour.source}) has no probe to score: "
                                   "add a [probe] table")
        return behaviour.probe
    raise WeightsteerError(f"unknown benchmark '{name}': choose from {', '.join(benchmark_names())}, or "
                           "give a behaviour file (.toml) to score its probe")


def with_max_think(bench, max_think: int):
    """`bench` scored with a guided thought of up to max_think tokens where it has such a mode (tiny-mfv
    and tiny-mfv axis probes; `--max-think`), else `bench` itself."""
    if max_think <= 0:
        return bench
    if bench is tinymfv:
        return tinymfv.Guided(max_think)
    return bench.thinking(max_think) if hasattr(bench, "thinking") else bench


def benchmark_names() -> list[str]:
    from ..behaviours import builtin_names

    return [*BENCHMARKS, *builtin_names()]
