"""Activation steering: add coef * scale_l * v_l to the residual stream of the middle layers.

Directions come from the last-token hidden states of the persona prompts (directions.py); this
module collects those states, holds the fitted vectors as a SteeringMethod, applies them with
hooks, and saves them as safetensors so a sweep can resume without refitting.

Scaling: each layer's unit vector is multiplied by the median norm of that layer's last-token
hidden states over the fitting prompts. coef = 1 then adds a vector as long as a typical residual
at every steered layer, so one coef means the same relative push in every layer and every model
(residual norms grow with depth and differ by orders of magnitude between models). The median
ignores the few outlier positions with huge norms.

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

ACTIVATION_METHODS = ("mean_diff", "mean_centred", "pca", "cosine_gated", "topk_clusters", "sspace")
FORMAT = "weightsteer.activation/1"
TAU = 0.1  # cosine_gated: tokens whose |cos(h, v)| is below this are not steered
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
    scales: dict[int, float] = field(default_factory=dict)  # layer -> median hidden-state norm
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
        made_for = self.meta.get("base_model", "another model")
        fingerprint = self.meta.get("fingerprint")
        if fingerprint and fingerprint != model_fingerprint(model):
            raise WeightsteerError(f"these steering vectors were fitted on '{made_for}' and do not fit this "
                                   "model (different weights): refit them on this model")
        n_layers, width = len(decoder_layers(model)), model.get_input_embeddings().embedding_dim
        if self.layers[-1] >= n_layers or self.vectors[self.layers[0]].shape[-1] != width:
            raise WeightsteerError(f"these steering vectors were fitted on '{made_for}' (other layer count "
                                   "or width): refit them on this model")

    def save(self, path) -> None:
        tensors = {f"layer.{i}": self.vectors[i] for i in self.layers}
        header = {**self.meta, "format": FORMAT, "name": self.name, "tau": self.tau,
                  "layers": self.layers, "scales": [self.scales[i] for i in self.layers]}
        save_tensors(path, tensors, header)


def load_activation_method(path) -> ActivationSteering:
    tensors, meta = load_tensors(path, what="activation steering vectors", fmt=FORMAT,
                                 fix="fit them again")
    meta.pop("format")
    layers, scales = meta.pop("layers"), meta.pop("scales")
    name, tau = meta.pop("name"), meta.pop("tau")
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
    raise WeightsteerError(f"sspace needs an MLP 'down_proj' Linear in each decoder layer; "
                           f"{type(model).__name__} has none")


def fit_questions(behaviour: Behaviour, n_questions: int, seed: int) -> list[str]:
    pool = list(behaviour.questions)
    if seed == 0:
        return pool[:n_questions]
    return random.Random(seed).sample(pool, min(n_questions, len(pool)))


def fit_activation_method(name: str, model, tokenizer, behaviour: Behaviour, n_personas: int = 1,
                          n_questions: int = 64, span: tuple[float, float] = (0.25, 0.75), *,
                          tau: float = TAU, k: int = 4, seed: int = 0) -> ActivationSteering:
    """Fit one activation-steering method on the behaviour's persona pairs and training questions.

    The questions are the behaviour's training questions (the general question pool, or for
    sycophancy the claim prompts the adapters are trained on): the first `n_questions` of them for
    seed 0, a sample drawn with the seed otherwise, so that each seed of a sweep fits on its own data
    as its adapters train on their own. (A pool no larger than n_questions is used whole by every
    seed; then only topk_clusters' k-means differs between seeds.)
    """
    if name not in ACTIVATION_METHODS:
        raise WeightsteerError(f"unknown activation method '{name}': choose one of {', '.join(ACTIVATION_METHODS)}")
    questions = fit_questions(behaviour, n_questions, seed)
    pairs = behaviour.persona_prompts(n_personas)
    layers = middle_layers(len(decoder_layers(model)), span)

    def states(system_prompts):
        texts = [chat.render(tokenizer, chat.messages(q, system=s)) for s in system_prompts for q in questions]
        return last_token_states(model, tokenizer, texts, layers)

    pos, neg = states([p for p, _ in pairs]), states([n for _, n in pairs])
    neutral = states([None]) if name == "mean_centred" else None
    vectors, scales = {}, {}
    for j, layer in enumerate(layers):
        p, n = pos[:, j], neg[:, j]
        if name in ("mean_diff", "cosine_gated"):
            vectors[layer] = directions.mean_diff(p, n)
        elif name == "mean_centred":
            vectors[layer] = directions.mean_centred(p, n, neutral[:, j])
        elif name == "pca":
            vectors[layer] = directions.pca(p, n)
        elif name == "topk_clusters":
            vectors[layer] = directions.cluster_directions(p, n, k=k, seed=seed)
        else:
            vectors[layer] = directions.sspace(p, n, output_weight(model, layer).cpu())
        scales[layer] = float(torch.cat([p, n]).norm(dim=-1).median())
    options = {"topk_clusters": {"k": k, "seed": seed}, "sspace": {"fraction": directions.SSPACE_FRACTION}}
    meta = {"base_model": model_label(model), "fingerprint": model_fingerprint(model),
            "behaviour": behaviour.name, "n_personas": n_personas, "n_questions": len(questions), "seed": seed,
            "span": list(span), **options.get(name, {})}
    return ActivationSteering(name, vectors=vectors, scales=scales, tau=tau, meta=meta)
