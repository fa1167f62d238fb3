"""Named bundles of command-line settings: `weightsteer sweep --preset seed`.

`seed` reproduces, as far as weightsteer can, the configuration behind the seed's trad_care and
authority tables (wassname/weight-steering, the fork of Fierro & Roger's code on Qwen3-0.6B, whose
activation rows come from wassname/steering-lite's tiny-mfv sweep). Every setting below names the
seed's value and where it was read; `applied` is the command-line value the preset sets (None: the
setting cannot be reproduced here and is listed so the report says so). Options given explicitly on
the command line win over the preset. The sweep writes the table into its folder (preset.json) and
the report prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import WeightsteerError

FORK = "wassname/weight-steering src/ws/train.py (TrainCfg, make_peft_config)"
LITE = "wassname/steering-lite scripts/run_tinymfv_sweep.py (commit 3427252, the trad_care sweep)"
TINYMFV = "tinymfv package guided rollout; seed src/ws/eval/tinymfv_airisk.py (FRAMES)"


@dataclass(frozen=True)
class Setting:
    name: str  # what it is, in words
    option: str | None  # the argparse dest the preset sets, None when nothing can be set
    applied: object  # the value set (None: not reproduced)
    seed: str  # the seed's value, as its code has it
    source: str
    note: str = ""  # why it differs, when it does

    @property
    def matches(self) -> bool:
        return self.applied is not None and not self.note


SEED = (
    Setting("model", "model", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B", FORK),
    Setting("behaviour and persona pairs", "behavior", "trad_care",
            "PERSONA_PAIRS_TRAD_CARE, 6 pairs, 'Pretend you're {persona} thinking about a task you've been given.'",
            "wassname/steering-lite src/steering_lite/data/branching.py (commit 3427252)"),
    Setting("persona pairs used", "n_personas", 6, "all 6", LITE),
    Setting("dose", "target_kl", "1", "target_kl 1.0 (kl_p95, iso-KL)", LITE),
    Setting("tiny-mfv probe", "max_think", 64,
            "JSON question, 'Think briefly.', up to 64 thinking tokens, forced close, prefilled key", TINYMFV),
    Setting("iso-KL prompts", None, None, "8 held-out user messages of the branching-suffix set, 20 greedy tokens",
            LITE, "weightsteer calibrates every method on the behaviour's held-out calibration questions"),
    Setting("activation coefficient per sign", None, None, "one |C| calibrated at +C, evaluated at +C and -C", LITE,
            "weightsteer calibrates -C on its own, as the seed does for its adapters (alpha_pos, alpha_neg)"),
    Setting("tiny-mfv bool-mass floor", None, 0.5, "PMASS_FLOOR 0.5: a cell below it in either frame is dropped",
            "wassname/steering-lite src/steering_lite/eval/foundations.py"),
    Setting("tiny-mfv true/false tokens", None, None, "guided: 7 spellings per side ('true', ' true', 'True', '1'...)",
            TINYMFV, "weightsteer sums every token that decodes, stripped and lower-cased, to true/1 or false/0"),
    Setting("activation layers", None, (0.25, 0.75), "n//4 to 3n//4 ('mid': central 50%), 7-20 of 28", LITE),
    Setting("activation vector scale", "activation_scale", "unit", "the same unit vector at every layer", LITE),
    Setting("cosine_gated tau", None, 0.0, "tau=0.0", LITE),
    Setting("topk_clusters", None, "k=4, 20 steps, centroids signed toward POS",
            "k=4, n_iters=20, sign canon by the mean difference",
            "wassname/steering-lite src/steering_lite/variants/topk_clusters.py"),
    Setting("pca sign", None, "majority of centred projections", "majority of centred projections, ties by the largest",
            "wassname/steering-lite src/steering_lite/variants/pca.py (commit 3427252)"),
    Setting("adapter layers", "layers", "0.3-0.8", "layer_frac 0.3-0.8: round(0.3 n) to round(0.8 n)", FORK),
    Setting("adapter modules", None, "q k v o gate up down", "LINEAR_TARGETS, the same seven", FORK),
    Setting("LoRA rank / alpha / dropout", "rank", 32, "r=32, lora_alpha=64, dropout 0 (alpha = 2 r here)", FORK),
    Setting("learning rate", "lr", 2e-4, "2e-4 for every adapter type", FORK),
    Setting("weight decay", "weight_decay", 0.01, "0.01 (AdamW)", FORK),
    Setting("warmup steps", "warmup_steps", 5, "warmup_steps 5", FORK),
    Setting("learning-rate schedule", "lr_schedule", "linear", "linear (Trainer default)", FORK),
    Setting("batch", "train_batch_size", 4, "per-device batch 4", FORK),
    Setting("gradient accumulation", "grad_accum", 4, "4 (16 rows per optimizer step)", FORK),
    Setting("max sequence length", "max_length", 512, "max_len 512", FORK),
    Setting("training length", None, None, "1 epoch over 90% of the data (10% held out for eval loss)", FORK,
            "weightsteer trains --steps optimizer steps and holds nothing out"),
    Setting("OFT block size", "oft_block_size", 8, "oft_block_size=8", FORK),
    Setting("IA3 modules", "ia3_modules", "k_proj,v_proj,down_proj", "k_proj, v_proj, down_proj (feedforward)", FORK),
    Setting("IA3 layers", "ia3_layers", "0-1", "every layer (IA3Config without layers_to_transform)", FORK),
    Setting("activation fitting data", None, None,
            "256 branching-suffix prompts (user message and a partial reply), each under one random POS "
            "and one random NEG persona", LITE,
            "weightsteer fits on the behaviour's questions under each persona pair, at the prompt's last token"),
    Setting("generated training data", None, None, "the seed's trad_care sampling settings were not checked", FORK,
            "weightsteer samples --n-samples responses per side of --max-new-tokens tokens"),
)

PRESETS = {"seed": SEED}


def preset(name: str) -> tuple[Setting, ...]:
    if name not in PRESETS:
        raise WeightsteerError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def defaults(name: str) -> dict:
    """The command-line defaults a preset sets."""
    return {s.option: s.applied for s in preset(name) if s.option is not None}


def table(name: str, used: dict | None = None) -> list[dict]:
    """The preset's settings beside the seed's, as JSON-able rows (written by the sweep, read by the report).
    `used` maps options to the values a run really used: an option overridden on the command line shows
    its own value and does not count as matching."""
    used = used or {}
    rows = []
    for s in preset(name):
        value = used.get(s.option, s.applied) if s.option else s.applied
        overridden = s.option is not None and s.option in used and used[s.option] != s.applied
        rows.append({"setting": s.name, "weightsteer": "not reproduced" if value is None else str(value),
                     "seed": s.seed, "matches": s.matches and not overridden,
                     "note": "overridden on the command line" if overridden else s.note, "source": s.source})
    return rows


def markdown(rows: list[dict]) -> list[str]:
    lines = ["| setting | weightsteer (preset) | seed | same? |", "|---|---|---|---|"]
    for r in rows:
        same = "yes" if r["matches"] else f"no: {r['note']}" if r["note"] else "no"
        lines.append(f"| {r['setting']} | {r['weightsteer']} | {r['seed']} | {same} |")
    return lines
