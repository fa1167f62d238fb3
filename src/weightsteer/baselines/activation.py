"""Activation steering: add coef * scale_l * v_l to the residual stream of the middle layers.

Directions come from the last-token hidden states of the persona prompts (directions.py); this
module collects those states, holds the fitted vectors as a SteeringMethod, applies them with
hooks, and saves them as safetensors so a sweep can resume without refitting. `sspace` edits the
outputs of each layer's residual writers instead (sspace.py) and is fitted and saved here too.

Scaling (`scale`): "unit", the reference's (steering-lite adds the same unit vector at every layer,
so coef is in the residual stream's own units), or "median_norm", weightsteer's: each layer's unit
vector times the median norm of that layer's last-token hidden states over the fitting prompts, so
coef = 1 adds a vector as long as a typical residual at every steered layer (residual norms grow
with depth, so under "unit" one coef pushes the early layers relatively harder than the late ones).
Iso-KL calibration absorbs the overall size either way; the two differ in how the push is shared
between layers. The seed preset uses "unit".

The shift is applied at every position, prompt and generated tokens alike.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

import torch

from .. import chat
from ..adapters import decoder_layers, middle_layers
from ..behaviours import Behaviour
from ..delta import model_fingerprint
from ..errors import WeightsteerError
from ..methods import SteeringMethod
from ..models import model_label
from ..steer import check_alpha
from ..tensorfile import load_tensors, save_tensors
from . import directions
from .hooks import layer_hooks
from .sspace import SSpaceSteering, check_fitted_on, fit_sspace

# The reference's methods (steering-lite's definitions), then weightsteer's own variants.
REFERENCE_METHODS = ("mean_diff", "mean_centred", "pca", "cosine_gated", "topk_clusters", "sspace")
OWN_METHODS = ("neutral_bisector", "down_proj_subspace")
ACTIVATION_METHODS = REFERENCE_METHODS + OWN_METHODS
FORMAT = "weightsteer.activation/2"  # /2: sspace states, and the scale mode in the header
TAU = 0.0  # cosine_gated: the gate is max(0, |cos(h, v)| - tau); the reference sweep uses 0
SCALES = ("unit", "median_norm")
BATCH_SIZE = 16


def shift(kind: str, vectors: torch.Tensor, amount: float, tau: float, h: torch.Tensor) -> torch.Tensor:
    """h plus `amount` times the steering vector for each token; vectors are (k, d) unit rows."""
    if kind == "cosine_gated":
        v = vectors[0]
        cos = (h @ v) / h.norm(dim=-1).clamp_min(1e-12)
        gate = (cos.abs() - tau).clamp_min(0.0)
        return h + amount * gate[..., None] * v
    if kind == "topk_clusters":  # the centroid of highest cosine with h (all centroids have norm 1)
        return h + amount * vectors[(h @ vectors.T).argmax(-1)]
    return h + amount * vectors[0]


@dataclass
class ActivationSteering(SteeringMethod):
    vectors: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (k, d) unit rows
    scales: dict[int, float] = field(default_factory=dict)  # layer -> 1 ("unit") or median hidden-state norm
    tau: float = TAU
    meta: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    def apply(self, model, coef: float):
        coef = check_alpha(coef)
        self.check_fits(model)
        ref = next(model.parameters())
        edits = {layer: functools.partial(shift, self.name, self.vectors[layer].to(ref.device, ref.dtype),
                                          coef * self.scales[layer], self.tau)
                 for layer in self.layers}
        return layer_hooks(model, edits)

    def check_fits(self, model) -> None:
        """Refuse, with one clear line, vectors fitted on another model."""
        check_fitted_on(self.meta, model)
        made_for = self.meta.get("base_model", "another model")
        n_layers, width = len(decoder_layers(model)), model.get_input_embeddings().embedding_dim
        if self.layers[-1] >= n_layers or self.vectors[self.layers[0]].shape[-1] != width:
            raise WeightsteerError(f"these steering vectors were fitted on '{made_for}' (other layer count "
                                   "or width): refit them on this model")

    def save(self, path) -> None:
        tensors = {f"layer.{i}": self.vectors[i] for i in self.layers}
        header = {**self.meta, "format": FORMAT, "name": self.name, "tau": self.tau,
                  "layers": self.layers, "scales": [self.scales[i] for i in self.layers]}
        save_tensors(path, tensors, header)


def save_activation_method(method, path) -> None:
    if isinstance(method, SSpaceSteering):
        save_tensors(path, method.tensors(), {**method.meta, "format": FORMAT, "name": method.name})
    else:
        method.save(path)


def load_activation_method(path) -> ActivationSteering | SSpaceSteering:
    tensors, meta = load_tensors(path, what="activation steering vectors", fmt=FORMAT,
                                 fix="fit them again")
    meta.pop("format")
    name = meta.pop("name")
    if name == "sspace":
        return SSpaceSteering.from_tensors(tensors, meta)
    layers, scales = meta.pop("layers"), meta.pop("scales")
    tau = meta.pop("tau")
    return ActivationSteering(name, vectors={i: tensors[f"layer.{i}"] for i in layers},
                              scales=dict(zip(layers, scales, strict=True)), tau=tau, meta=meta)


@torch.no_grad()
def last_token_states(model, tokenizer, texts: list[str], layers: list[int]) -> torch.Tensor:
    """(len(texts), len(layers), d) float32 output hidden states of `layers` at each prompt's last token."""
    captured: dict[int, list[torch.Tensor]] = {i: [] for i in layers}

    def capture(i: int):
        def edit(h: torch.Tensor) -> torch.Tensor:
            captured[i].append(h[:, -1].float().cpu())  # left padding: the last token is at -1
            return h
        return edit

    with layer_hooks(model, {i: capture(i) for i in layers}):
        for start in range(0, len(texts), BATCH_SIZE):
            batch = chat.encode(tokenizer, texts[start:start + BATCH_SIZE], model.device)
            model(**batch, use_cache=False, logits_to_keep=1)
    return torch.stack([torch.cat(captured[i]) for i in layers], 1)


def output_weight(model, layer: int) -> torch.Tensor:
    """The MLP down_proj weight of a decoder layer: the largest writer into its residual stream."""
    for sub, module in decoder_layers(model)[layer].named_modules():
        if sub.split(".")[-1] == "down_proj" and isinstance(module, torch.nn.Linear):
            return module.weight.detach()
    raise WeightsteerError(f"down_proj_subspace needs an MLP 'down_proj' Linear in each decoder layer; "
                           f"{type(model).__name__} has none")


def fit_questions(behaviour: Behaviour, n_questions: int, seed: int) -> list[str]:
    """The first n_questions training questions for seed 0; a sample drawn with the seed otherwise."""
    pool = list(behaviour.questions)
    if seed == 0:
        return pool[:n_questions]
    return random.Random(seed).sample(pool, min(n_questions, len(pool)))


def contrast_texts(tokenizer, behaviour: Behaviour, n_personas: int, n_questions: int,
                   seed: int = 0) -> tuple[list[str], list[str]]:
    """(POS texts, NEG texts): every training question under each pair's POS and NEG persona as system
    prompt, rendered up to the reply; text j of both lists is the same question under the same pair."""
    questions = fit_questions(behaviour, n_questions, seed)
    pairs = behaviour.persona_prompts(n_personas)

    def texts(system_prompts):
        return [chat.render(tokenizer, chat.messages(q, system=s)) for s in system_prompts for q in questions]

    return texts([p for p, _ in pairs]), texts([n for _, n in pairs])


def fit_activation_method(name: str, model, tokenizer, behaviour: Behaviour, n_personas: int = 1,
                          n_questions: int = 64, span: tuple[float, float] = (0.25, 0.75), *,
                          tau: float = TAU, k: int = 4, seed: int = 0, scale: str = "median_norm",
                          rank: int | None = None) -> ActivationSteering | SSpaceSteering:
    """Fit one activation-steering method on the behaviour's persona pairs and training questions.

    The questions are the behaviour's training questions (the general question pool, or for
    sycophancy the claim prompts the adapters are trained on): the first `n_questions` of them for
    seed 0, a sample drawn with the seed otherwise, so that each seed of a sweep fits on its own data
    as its adapters train on their own. (A pool no larger than n_questions is used whole by every
    seed; then only topk_clusters' k-means differs between seeds.)
    `scale` is "unit" (the reference) or "median_norm" (module docstring); `rank` is sspace's
    number of modes (None: full rank, the reference default).
    """
    if name not in ACTIVATION_METHODS:
        raise WeightsteerError(f"unknown activation method '{name}': choose one of {', '.join(ACTIVATION_METHODS)}")
    if scale not in SCALES:
        raise WeightsteerError(f"unknown activation scale '{scale}': choose one of {', '.join(SCALES)}")
    pos_texts, neg_texts = contrast_texts(tokenizer, behaviour, n_personas, n_questions, seed)
    layers = middle_layers(len(decoder_layers(model)), span)
    meta = {"base_model": model_label(model), "fingerprint": model_fingerprint(model),
            "behaviour": behaviour.name, "n_personas": n_personas, "n_questions": len(pos_texts) // n_personas,
            "seed": seed, "span": list(span)}
    if name == "sspace":
        states = fit_sspace(model, tokenizer, pos_texts, neg_texts, layers, rank)
        return SSpaceSteering("sspace", states=states, meta={**meta, "rank": rank if rank is not None else "full"})

    pos, neg = (last_token_states(model, tokenizer, texts, layers) for texts in (pos_texts, neg_texts))
    neutral = None
    if name == "neutral_bisector":
        questions = fit_questions(behaviour, n_questions, seed)
        neutral = last_token_states(model, tokenizer, [chat.render(tokenizer, chat.messages(q)) for q in questions],
                                    layers)
    vectors, scales = {}, {}
    for j, layer in enumerate(layers):
        p, n = pos[:, j], neg[:, j]
        if name in ("mean_diff", "cosine_gated"):
            vectors[layer] = directions.mean_diff(p, n)
        elif name == "mean_centred":
            vectors[layer] = directions.mean_centred(p, n)
        elif name == "neutral_bisector":
            vectors[layer] = directions.neutral_bisector(p, n, neutral[:, j])
        elif name == "pca":
            vectors[layer] = directions.pca(p, n)
        elif name == "topk_clusters":
            vectors[layer] = directions.cluster_directions(p, n, k=k, seed=seed)
        else:
            vectors[layer] = directions.down_proj_subspace(p, n, output_weight(model, layer).cpu())
        scales[layer] = 1.0 if scale == "unit" else float(torch.cat([p, n]).norm(dim=-1).median())
    options = {"topk_clusters": {"k": k, "seed": seed}, "down_proj_subspace": {"fraction": directions.SSPACE_FRACTION}}
    return ActivationSteering(name, vectors=vectors, scales=scales, tau=tau,
                              meta={**meta, "scale": scale, **options.get(name, {})})
