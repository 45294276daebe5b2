"""The static model distilled from the installed all-MiniLM-L6-v2: built offline, saved in
model2vec's format, loaded from a path or a hub name, encoded column-wise exactly like
model2vec, cached in the state directory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from integrity.analysis import static_embeddings as se
from integrity.analysis.embeddings import ModelUnavailableError

TEXTS = [
    "The city council approved the new budget on Tuesday after a long debate.",
    "After lengthy discussions, the new budget was passed by the city council on Tuesday.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "This package contains the development headers for the library.",
    "",
    "naïve café [SEP] ünïcödé",
]


@pytest.fixture
def small_model(small_static_model: Path) -> Path:
    """A distillation restricted to the tokens tests use (tests/conftest.py)."""
    return small_static_model


def test_distilled_model_loads_with_model2vec_and_keeps_paraphrases_close(small_model: Path):
    from model2vec import StaticModel

    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {p.name for p in small_model.iterdir()}
    m = se.load_static_model(small_model)
    assert se.load_static_model(str(small_model)) is m  # loaded once per process
    assert m.dim == 64
    v = se.encode_static(m, TEXTS)
    assert v.shape == (len(TEXTS), 64) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[:4], axis=1), 1.0, atol=1e-5) and not v[4].any()  # "" -> zero
    # column-wise encoding = model2vec's own encode (mean of token vectors), special tokens included
    ref = StaticModel.from_pretrained(str(small_model)).encode(TEXTS[:4] + TEXTS[5:])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.allclose(np.sum(ref * np.concatenate([v[:4], v[5:]]), axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_truncation_counts_tokens(small_model: Path):
    m = se.load_static_model(small_model)
    long = TEXTS[0] + " " + TEXTS[2] * 20
    assert np.allclose(se.encode_static(m, [long], max_tokens=14)[0], se.encode_static(m, [TEXTS[0]])[0], atol=1e-5)


def test_a_hub_name_is_loaded_through_the_hub_cache(small_model: Path, tmp_path: Path, monkeypatch):
    # the hub code path, offline: the model sits in a Hugging Face cache as a hub download would
    snap = tmp_path / "hub" / "models--acme--static-test" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in small_model.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (tmp_path / "hub" / "models--acme--static-test" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--static-test" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    m = se.static_model("acme/static-test", None)
    assert m.dim == 64
    with pytest.raises(ModelUnavailableError, match="acme/not-there"):
        se.load_static_model("acme/not-there")
    with pytest.raises(ModelUnavailableError, match="not a directory"):
        se.load_static_model(str(tmp_path / "missing"))


def test_build_cached_distills_once_and_publishes_into_the_state_dir(small_model: Path, tmp_path: Path,
                                                                     monkeypatch):
    calls = []

    def fake_distill(out, source, pca_dims):  # the real one is tested above; here: only once
        calls.append(out)
        for f in small_model.iterdir():
            (Path(out) / f.name).write_bytes(f.read_bytes())
        return Path(out)

    monkeypatch.setattr(se, "distill", fake_distill)
    monkeypatch.setenv("INTEGRITY_CACHE_DIR", str(tmp_path / "machine"))
    a = se.build_cached(tmp_path / "state-a")
    b = se.build_cached(tmp_path / "state-b")  # a new state dir: copied from the machine cache
    assert len(calls) == 1
    assert a.parent == tmp_path / "state-a" / "models" and (a / "model.safetensors").exists()
    assert (b / "model.safetensors").exists() and a.name == b.name
    assert se.build_cached(tmp_path / "state-a") == a and len(calls) == 1
    assert not [p for p in (tmp_path / "state-a" / "models").iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.slow
def test_full_distillation_from_the_installed_minilm(tmp_path: Path):
    out = se.distill(tmp_path / "full")
    m = se.load_static_model(out)
    assert m.dim == se.DEFAULT_PCA_DIMS and len(m.tokens) == 30522
    v = se.encode_static(m, TEXTS[:3])
    assert v[0] @ v[1] > 0.8 and v[0] @ v[2] < 0.6
