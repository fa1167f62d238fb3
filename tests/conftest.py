"""Fixtures: tiny random models built from configs (never downloaded), sharing the embedded tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from weightsteer.tiny import QWEN3_STYLE_TEMPLATE, embedded_tokenizer, tiny_config, tiny_model

__all__ = ["QWEN3_STYLE_TEMPLATE", "TINY_MFV_DIR", "make_tiny", "tiny_config"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_MFV_DIR = Path(os.environ.get("WEIGHTSTEER_TINY_MFV", SHARED_DATA / "tiny-mfv"))


@pytest.fixture(scope="session")
def base_tokenizer():
    return embedded_tokenizer()


def make_tiny(arch: str, tokenizer, seed: int = 0):
    return tiny_model(arch, tokenizer, seed)


@pytest.fixture(params=["qwen3", "llama"])
def tiny(request, base_tokenizer):
    return make_tiny(request.param, base_tokenizer)


@pytest.fixture
def tiny_llama(base_tokenizer):
    return make_tiny("llama", base_tokenizer)


@pytest.fixture
def tiny_qwen3(base_tokenizer):
    return make_tiny("qwen3", base_tokenizer)


@pytest.fixture
def tiny_llama_dir(tiny_llama, tmp_path):
    """tiny_llama saved as a model folder (tmp_path/tiny), for the command line's --model."""
    model, tokenizer = tiny_llama
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"
