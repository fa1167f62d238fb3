"""export-base: a Hugging Face folder as a llama.cpp base GGUF, read back with the gguf package."""

import importlib.util
import re
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from conftest import make_tiny
from test_gguf_export import LLAMA_CPP_NAMES, read_gguf, undo_rope_interleave

from weightsteer.cli import main
from weightsteer.errors import WeightsteerError
from weightsteer.gguf_base import export_base_gguf
from weightsteer.models import EMBEDDED

OTHER_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
LAYER_NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
               "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}


def llama_cpp_base_name(hf_name: str) -> str:
    if hf_name in OTHER_NAMES:
        return OTHER_NAMES[hf_name]
    layer, module = re.fullmatch(r"model\.layers\.(\d+)\.(\w+(?:\.\w+)?)\.weight", hf_name).groups()
    return f"blk.{layer}.{LLAMA_CPP_NAMES.get(module) or LAYER_NORMS[module]}.weight"


def saved_tiny(arch, tokenizer, folder: Path):
    model, tok = make_tiny(arch, tokenizer)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model, tok


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_base_gguf_holds_the_weights_and_hyperparameters(arch, base_tokenizer, tmp_path):
    model, tok = saved_tiny(arch, base_tokenizer, tmp_path / "hf")
    export_base_gguf(tmp_path / "hf", tmp_path / "base.gguf", "f32", log=lambda *_: None)
    fields, tensors = read_gguf(tmp_path / "base.gguf")

    config = model.config
    assert fields["general.architecture"] == arch and fields["general.type"] == "model"
    assert fields[f"{arch}.block_count"] == config.num_hidden_layers
    assert fields[f"{arch}.embedding_length"] == config.hidden_size
    assert fields[f"{arch}.feed_forward_length"] == config.intermediate_size
    assert fields[f"{arch}.attention.head_count"] == config.num_attention_heads
    assert fields[f"{arch}.attention.head_count_kv"] == config.num_key_value_heads
    assert fields[f"{arch}.attention.key_length"] == config.head_dim
    assert fields[f"{arch}.rope.freq_base"] == pytest.approx(config.rope_parameters["rope_theta"])
    assert fields[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(config.rms_norm_eps)

    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied: no output.weight
    assert set(tensors) == {llama_cpp_base_name(n) for n in state}
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    for name, weight in state.items():
        t = tensors[llama_cpp_base_name(name)]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        array = np.asarray(t.data).reshape(weight.shape)
        module = name.split(".")[-2]
        if arch == "llama" and module in heads:
            array = undo_rope_interleave(array, heads[module])
        np.testing.assert_array_equal(array, weight.numpy())


def test_f16_keeps_norms_in_f32(base_tokenizer, tmp_path):
    model, _ = saved_tiny("llama", base_tokenizer, tmp_path / "hf")
    export_base_gguf(tmp_path / "hf", tmp_path / "base.gguf", "f16", log=lambda *_: None)
    _, tensors = read_gguf(tmp_path / "base.gguf")
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    embed = model.state_dict()["model.embed_tokens.weight"]
    np.testing.assert_array_equal(np.asarray(tensors["token_embd.weight"].data).reshape(embed.shape),
                                  embed.to(torch.float16).numpy())


def test_tokenizer_metadata_matches_llama_cpps_own_conversion(base_tokenizer, tmp_path):
    """The embedded model's original GGUF was written by llama.cpp's converter: the tokenizer fields
    written here for the same tokenizer must be the same."""
    saved_tiny("llama", base_tokenizer, tmp_path / "hf")
    export_base_gguf(tmp_path / "hf", tmp_path / "base.gguf", "f32", log=lambda *_: None)
    mine, _ = read_gguf(tmp_path / "base.gguf")
    spec = EMBEDDED["smollm2-135m"]
    original, _ = read_gguf(Path(importlib.util.find_spec(spec.package).origin).parent / spec.gguf_file)
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                "tokenizer.chat_template"):
        assert mine[key] == original[key], key


def test_refusals(base_tokenizer, tmp_path):
    model, _ = saved_tiny("llama", base_tokenizer, tmp_path / "hf")
    with pytest.raises(WeightsteerError, match="has no config.json"):
        export_base_gguf(tmp_path, tmp_path / "a.gguf")
    with pytest.raises(WeightsteerError, match="--outtype"):
        export_base_gguf(tmp_path / "hf", tmp_path / "a.gguf", "q4_0")
    model.config.rope_parameters = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
    model.config.save_pretrained(tmp_path / "hf")
    with pytest.raises(WeightsteerError, match="'linear' rope scaling"):
        export_base_gguf(tmp_path / "hf", tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()


def test_export_base_cli_refuses_a_folder_as_out(base_tokenizer, tmp_path, capsys):
    saved_tiny("llama", base_tokenizer, tmp_path / "hf")
    (tmp_path / "out").mkdir()
    capsys.readouterr()  # save_pretrained's progress bar
    code = main(["export-base", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is a folder" in err[0]
