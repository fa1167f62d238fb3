import copy
import json

import pytest
import torch
from adapter_helpers import adapter_pair, random_adapter
from conftest import make_tiny
from peft import LoraConfig, PeftModel, get_peft_model

import weightsteer as ws
from weightsteer.adapters import decoder_layers, middle_layers, target_module_names
from weightsteer.cli import main
from weightsteer.delta import LowRank
from weightsteer.errors import WeightsteerError
from weightsteer.similarity import inner, layer_of, lora_file_change, merged_change, similarity


def reference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
    """Dense float64 cosines, overall and per layer, computed the obvious way."""
    names = sorted(set(a) | set(b))

    def vector(d, keep):
        return torch.cat([d.get(n, torch.zeros_like(a.get(n, b.get(n)))).double().flatten()
                          for n in names if keep(n)])

    def cos(keep):
        va, vb = vector(a, keep), vector(b, keep)
        return float(va @ vb / (va.norm() * vb.norm()))

    layers = sorted({layer_of(n) for n in names})
    return cos(lambda n: True), {layer: cos(lambda n, layer=layer: layer_of(n) == layer) for layer in layers}


@pytest.fixture
def directions(tiny_llama, tmp_path):
    """Three directions of one model: two factored (lora, delora), one dense (dora)."""
    model, _ = tiny_llama
    return model, {m: ws.WeightDelta.from_adapters(model, *adapter_pair(model, m, tmp_path)) for m in
                   ("lora", "delora", "dora")}


def test_inner_products_of_factored_forms_equal_dense():
    gen = torch.Generator().manual_seed(0)
    x = LowRank(torch.randn(30, 4, generator=gen), torch.randn(4, 20, generator=gen))
    y = LowRank(torch.randn(30, 6, generator=gen), torch.randn(6, 20, generator=gen))
    d = torch.randn(30, 20, generator=gen)
    for a, b in [(x, y), (x, d), (d, y), (d, d)]:
        da, db = (p.dense() if isinstance(p, LowRank) else p for p in (a, b))
        assert inner(a, b) == pytest.approx(float((da.double() * db.double()).sum()), rel=1e-5)


def test_a_direction_with_itself_and_its_negation(directions):
    _, deltas = directions
    for delta in deltas.values():
        same, opposite = similarity(delta, delta), similarity(delta, -delta)
        assert same.overall == pytest.approx(1.0, abs=1e-6) and opposite.overall == pytest.approx(-1.0, abs=1e-6)
        assert all(row["cosine"] == pytest.approx(1.0, abs=1e-6) for row in same.layers)
        assert sum(m["contribution"] for m in same.modules) == pytest.approx(1.0, abs=1e-6)


def test_factored_similarity_equals_the_dense_computation(directions):
    _, deltas = directions
    for a, b in [("lora", "delora"), ("lora", "dora"), ("delora", "dora")]:
        factored = similarity(deltas[a], deltas[b])
        dense = similarity(ws.WeightDelta(deltas[a].dense()), ws.WeightDelta(deltas[b].dense()))
        overall, layers = reference(deltas[a].dense(), deltas[b].dense())
        assert factored.overall == pytest.approx(overall, abs=1e-5) and dense.overall == pytest.approx(overall, abs=1e-5)
        assert {row["layer"]: row["cosine"] for row in factored.layers} == pytest.approx(layers, abs=1e-5)
        assert abs(factored.overall) < 0.5  # independent random directions: a real check, not 1 == 1


def test_modules_in_only_one_side_count_in_its_norm(directions):
    _, deltas = directions
    a = deltas["lora"]
    half = ws.WeightDelta({n: p for i, (n, p) in enumerate(a.parts.items()) if i % 2 == 0}, a.meta)
    overall, _ = reference(a.dense(), half.dense())
    assert similarity(a, half).overall == pytest.approx(overall, abs=1e-6)
    assert 0 < overall < 1


def rslora_adapter(model, out_dir):
    targets = target_module_names(model, middle_layers(len(decoder_layers(model))))
    config = LoraConfig(r=4, lora_alpha=6, use_rslora=True, target_modules=targets, init_lora_weights=False,
                        alpha_pattern={targets[0].split(".")[-1]: 3})
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(out_dir))
    peft_model.unload()


@pytest.mark.parametrize("kind", ["lora", "rslora"])
def test_lora_folder_read_from_files_equals_peft_merge(tiny_qwen3, tmp_path, kind):
    model, _ = tiny_qwen3
    folder = tmp_path / kind
    if kind == "lora":
        random_adapter(model, "lora", folder, seed=5)
    else:
        rslora_adapter(model, folder)
    from_files = lora_file_change(folder)
    assert from_files is not None and from_files.is_factored()
    through_model = merged_change(model, folder)
    assert set(from_files.parts) == set(through_model.parts)
    for name, value in through_model.dense().items():
        torch.testing.assert_close(from_files.dense()[name], value, rtol=1e-4, atol=1e-6)


def test_other_adapters_go_through_the_model_and_leave_it_unchanged(tiny_qwen3, tmp_path):
    model, _ = tiny_qwen3
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pos, neg = adapter_pair(model, "pissa", tmp_path)
    assert lora_file_change(pos) is None  # PiSSA rewrites the base weights: needs the model
    delta = ws.WeightDelta.from_adapters(model, pos, neg)
    change = merged_change(model, pos)
    merged = PeftModel.from_pretrained(copy.deepcopy(model), str(pos)).merge_and_unload()  # the reference
    for name, param in merged.named_parameters():
        expected = param.detach() - before[name]
        if name in change.parts:
            torch.testing.assert_close(change.parts[name], expected, rtol=1e-4, atol=1e-5)
        else:
            assert expected.abs().max() == 0, name
    difference = change - merged_change(model, neg)
    for name, value in delta.dense().items():
        torch.testing.assert_close(difference.dense()[name], value, rtol=1e-4, atol=1e-5)
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_cli_similarity_table_and_json(tiny_llama, tmp_path, capsys):
    model, tok = tiny_llama
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    pos, neg = adapter_pair(model, "dora", tmp_path)
    ws.WeightDelta.from_adapters(model, pos, neg).save(tmp_path / "d.safetensors")
    argv = ["similarity", "--delta", str(tmp_path / "d.safetensors"), "--adapter", str(pos),
            "--model", str(tmp_path / "base"), "--top", "3", "--json", str(tmp_path / "sim.json")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    numbers = json.loads((tmp_path / "sim.json").read_text())
    assert out.startswith(f"overall cosine: {numbers['overall']:+.4f}")
    assert "layer  cosine" in out and "top 3 modules" in out
    assert [row["layer"] for row in numbers["layers"]] == [1, 2]

    argv = ["similarity", "--delta", str(tmp_path / "d.safetensors"), "--adapter", str(tmp_path / "d.safetensors")]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("overall cosine: +1.0000")

    argv = ["similarity", "--delta", str(tmp_path / "d.safetensors"), "--adapter", str(pos)]
    assert main(argv) == 2  # a DoRA folder needs the model, and the direction names no embedded one
    assert "pass --model" in capsys.readouterr().err


def test_different_base_models_are_refused(directions, base_tokenizer, tmp_path):
    _, deltas = directions
    other, _ = make_tiny("llama", base_tokenizer, seed=1)
    foreign = ws.WeightDelta.from_adapters(other, *adapter_pair(other, "lora", tmp_path / "other"))
    with pytest.raises(WeightsteerError, match="different base models"):
        similarity(deltas["lora"], foreign)
