"""The benchmarks, all behind one interface so the CLI, the sweep and calibration treat them alike.

Each module in BENCHMARKS provides:
- load(data_dir=None, limit=None) -> list of items (from the hub, or a local folder described in the
  module's docstring); bad data raises WeightsteerError naming the file and row.
- score(model, tokenizer, items, *, system=None, user_prefix=None, batch_size=16, progress=True)
  -> one JSON-able dict per row, each with an `id`. It never touches weights: steer around the call.
- summarise(rows, base_rows=None, n_boot=256, seed=0) -> JSON-able summary with bootstrap 95%
  intervals ({"mean", "lo", "hi", "n"}); with base_rows also "shift", paired against the base run.
- HEADLINE_KEY, the summary key of the number report tables show, and
  headline(summary, *, shift=False) -> float | None, its mean (or the mean of its shift vs base):
  tinymfv mean logit(wrongness); airisk truthfulness log-ratio; sycophancy, honesty and mood mean
  log-ratio.

si.py (surgical informedness) and stats.py (bootstrap) work on the rows of any of them.
"""

from . import airisk, honesty, mood, sycophancy, tinymfv

BENCHMARKS = {"tinymfv": tinymfv, "airisk": airisk, "sycophancy": sycophancy, "honesty": honesty, "mood": mood}
