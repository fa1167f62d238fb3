"""A Hugging Face Llama or Qwen3 folder (the embedded model's dense cache among them) as a llama.cpp
base model GGUF, f32 or f16, written directly with the gguf package.

The steered model in llama.cpp is this base plus the adapter of gguf_export, so the base must be
the very weights the direction was made on: for the embedded model that is the dense cache, not
the Q4_1 file it was dequantized from (the two differ by about 5e-3 nats per token).

Written as llama.cpp's own converter would for these models (facts from convert_hf_to_gguf.py):
hyperparameters under <arch>.*, tensors under llama.cpp's names with Llama's q/k rows in rope
order (gguf_arch), 1-D tensors (norms) always f32, no output.weight when the embeddings are tied,
and a GPT-2-style BPE tokenizer: tokenizer.ggml.model "gpt2", the token list and types, merges,
special token ids, add_bos/add_eos as the Hugging Face tokenizer really behaves, the chat
template, and tokenizer.ggml.pre, the name of the pre-tokenizer llama.cpp must use. That name is
recognised the way the converter does, by hashing the token ids of a fixed test text.
"""

from __future__ import annotations

import sys
from hashlib import sha256
from pathlib import Path

import gguf
import numpy as np
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer

from .atomic import atomic_path
from .errors import WeightsteerError
from .gguf_arch import WRITTEN_BY_KEY, GGUFArch, gguf_arch, interleave_rows, rope_heads, tensor_name

OUTTYPES = {"f32": (np.float32, gguf.LlamaFileType.ALL_F32), "f16": (np.float16, gguf.LlamaFileType.MOSTLY_F16)}

# The text llama.cpp's converter tokenizes to recognise a BPE pre-tokenizer, and the hashes of the
# token ids (sha256 of str(list)) for the tokenizers of the models weightsteer supports.
PRE_TOKENIZER_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f "
    "(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 "
    "3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 "
    "?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= \u043d\u0435\u0449\u043e \u043d\u0430 "
    "\u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 ''''''```````\"\"\"\"......!!!!!!?????? I've been "
    "'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 - Qwen3
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3 (embedding) variant
}


def pre_tokenizer(tokenizer) -> str:
    digest = sha256(str(tokenizer.encode(PRE_TOKENIZER_TEXT)).encode()).hexdigest()
    if digest not in PRE_TOKENIZERS:
        raise WeightsteerError(f"cannot tell which pre-tokenizer llama.cpp should use for this tokenizer (hash "
                               f"{digest[:12]}): convert this model with llama.cpp's convert_hf_to_gguf.py instead")
    return PRE_TOKENIZERS[digest]


def rope_theta(config) -> float:
    """The rope base; anything but plain rope (scaled, yarn, llama3) is refused."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in (None, "default"):
        raise WeightsteerError(f"this model uses '{kind}' rope scaling, which weightsteer does not write to GGUF: "
                               "convert it with llama.cpp's convert_hf_to_gguf.py instead")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def export_base_gguf(model_dir, out_file, outtype: str = "f16", log=print) -> dict:
    """Write the model in `model_dir` (a save_pretrained folder) to `out_file`; return a summary."""
    model_dir = Path(model_dir)
    if outtype not in OUTTYPES:
        raise WeightsteerError(f"--outtype must be one of {', '.join(OUTTYPES)}, got '{outtype}'")
    if not (model_dir / "config.json").is_file():
        raise WeightsteerError(f"'{model_dir}' has no config.json: pass a Hugging Face model folder")
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise WeightsteerError(f"'{model_dir}' has no .safetensors weights: save the model with "
                               "save_pretrained (safetensors) first")
    config = AutoConfig.from_pretrained(model_dir)
    arch = gguf_arch(config)
    theta = rope_theta(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pre = pre_tokenizer(tokenizer)
    dtype, file_type = OUTTYPES[outtype]

    writer = gguf.GGUFWriter(path=None, arch=arch.name)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(model_dir.name)
    writer.add_string(WRITTEN_BY_KEY, "export-base")  # lets a later export replace this file, and only this kind
    write_hyperparameters(writer, config, theta, file_type)
    write_tokenizer(writer, tokenizer, model_dir, pre, config.vocab_size)
    count = 0
    for path in files:
        with safe_open(path, framework="pt") as f:
            for hf_name in f.keys():
                if hf_name == "lm_head.weight" and config.tie_word_embeddings:
                    continue  # llama.cpp uses token_embd.weight when output.weight is absent
                array = gguf_array(arch, hf_name, f.get_tensor(hf_name).float().numpy(), dtype)
                writer.add_tensor(tensor_name(arch, hf_name), array)
                count += 1
                if count % 50 == 0:
                    log(f"[export-base] {count} tensors read")
    with atomic_path(out_file) as tmp:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=sys.stderr.isatty())
        writer.close()
    return {"architecture": arch.name, "tensors": count, "outtype": outtype, "pre_tokenizer": pre,
            "vocab_size": config.vocab_size}


def gguf_array(arch: GGUFArch, hf_name: str, array: np.ndarray, dtype) -> np.ndarray:
    if (heads := rope_heads(arch, hf_name)) is not None:
        array = interleave_rows(array, heads)
    return np.ascontiguousarray(array, dtype=np.float32 if array.ndim == 1 else dtype)


def write_hyperparameters(writer: gguf.GGUFWriter, config, theta: float, file_type) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def token_table(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id below vocab_size: its token and llama.cpp token type (special added tokens are
    CONTROL, other added ones USER_DEFINED, ids the tokenizer lacks UNUSED placeholders)."""
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def write_tokenizer(writer: gguf.GGUFWriter, tokenizer, model_dir: Path, pre: str, vocab_size: int) -> None:
    tokens, types = token_table(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise WeightsteerError(f"'{model_dir}' has no BPE merges (tokenizer.json or merges.txt): weightsteer "
                               "writes GPT-2-style BPE tokenizers only; use llama.cpp's convert_hf_to_gguf.py")
    # What the Hugging Face tokenizer really does, so llama.cpp tokenizes prompts the same way.
    ids = tokenizer("a")["input_ids"]
    special.add_special_token["bos"] = tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
    special.add_special_token["eos"] = tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id
    special.add_to_gguf(writer, quiet=True)
