"""Timbre controls against the reference's own code (fixtures: tests/fixtures/make_timbre.py).

Cluster mixing vs ``cluster/__init__.py`` + infer_tool's mix, retrieval mixing vs the faiss
search in infer_tool.py, exact top-k vs faiss ``IndexFlatL2``, the reference's
``kmeans_32.pt`` (made by its own train_cluster.py) read without torch/sklearn, and the JAX
k-means against scikit-learn's MiniBatchKMeans inertia. None of these needs faiss or sklearn
(the fixture stores the faiss index's rows, centroids and lists); reading the ``.pkl`` itself
does and is skipped without faiss.
"""

from __future__ import annotations

import json
import os
import pickle
import sys

import numpy as np
import pytest

from svcjax.timbre import index as timbre

F = os.path.join(os.path.dirname(__file__), "fixtures", "timbre")
# Mixed units are sums of float32 products of O(5) values: 1e-5 leaves > 10x headroom over
# float32 rounding (eps 1.2e-7 * |x| ~ 6e-7 per term, 8 terms) on any x86-64 CPU.
TOL = 1e-5


def _fixture_retrieval():
    z = np.load(os.path.join(F, "retrieval.npz"))
    spk = {sid: timbre.SpeakerArrays(z[f"rows_{sid}"], z[f"centroids_{sid}"],
                                timbre.lists_from_assignment(z[f"assign_{sid}"],
                                                              len(z[f"centroids_{sid}"])))
           for sid in (0, 1)}
    return z, spk


def test_reference_kmeans_pt_imports_with_the_same_centres():
    idx = timbre.load_timbre_index(os.path.join(F, "kmeans_32.pt"))
    z = np.load(os.path.join(F, "cluster.npz"))
    assert idx.kind == "cluster" and set(idx.speakers) == {"alice", "bob"}
    for spk in ("alice", "bob"):
        np.testing.assert_array_equal(idx.speakers[spk].vectors, z[f"centers_{spk}"])


@pytest.mark.parametrize("ratio", [0.5, 1.0])
def test_cluster_mix_matches_reference(ratio):
    idx = timbre.load_timbre_index(os.path.join(F, "kmeans_32.pt"))
    z = np.load(os.path.join(F, "cluster.npz"))
    for b, spk in enumerate(("alice", "bob")):
        out = np.asarray(idx.mix(z["units"][b:b + 1], speaker=spk, ratio=ratio))[0]
        np.testing.assert_allclose(out, z[f"mixed_{spk}_{ratio}"], rtol=0, atol=TOL)
    # both speakers in one batch, per-frame weights one-hot per batch row
    w = np.zeros((2, z["units"].shape[1], 2), np.float32)
    w[0, :, 0] = w[1, :, 1] = 1
    out = np.asarray(idx.mix(z["units"], speaker=(("alice", "bob"), w), ratio=ratio))
    np.testing.assert_allclose(out[1], z[f"mixed_bob_{ratio}"], rtol=0, atol=TOL)


@pytest.mark.parametrize("ratio", [0.5, 1.0])
def test_retrieval_mix_matches_reference_ivf_search(ratio):
    z, spk = _fixture_retrieval()
    idx = timbre.TimbreIndex("retrieval", spk, search="ivf")
    for sid in (0, 1):
        out = np.asarray(idx.mix(z["units"][sid], speaker=sid, ratio=ratio))
        np.testing.assert_allclose(out, z[f"mixed_{sid}_{ratio}"], rtol=0, atol=TOL)


def test_ivf_and_exact_neighbours_match_faiss():
    import jax.numpy as jnp
    z, spk = _fixture_retrieval()
    idx = timbre.TimbreIndex("retrieval", spk, search="ivf")
    agree = []
    for sid in (0, 1):
        q = z["units"][sid]
        d, i = timbre.topk_exact(q, z[f"rows_{sid}"], block=512)  # several blocks
        np.testing.assert_array_equal(np.asarray(i), z[f"exact_labels_{sid}"])
        # |q|^2 + |b|^2 - 2 q.b of O(100) terms: float32 cancellation ~1e-4 relative to |q|^2
        np.testing.assert_allclose(np.asarray(d), z[f"exact_dist_{sid}"], rtol=1e-5, atol=1e-3)
        a = idx.device_arrays((sid,))
        _, iv = timbre.topk_ivf(jnp.asarray(q), a["vectors"][0], a["centroids"][0],
                                a["lists"][0])
        np.testing.assert_array_equal(np.sort(np.asarray(iv), 1),
                                      np.sort(z[f"ivf_labels_{sid}"], 1))
        agree.append(np.mean(np.all(np.sort(z[f"ivf_labels_{sid}"], 1)
                                    == np.sort(z[f"exact_labels_{sid}"], 1), axis=1)))
    # the reference's nprobe-1 search is far from exact on random data (why IVF is kept)
    assert max(agree) < 0.5


def test_faiss_pkl_imports_and_mixes_as_the_reference():
    pytest.importorskip("faiss")
    idx = timbre.load_timbre_index(os.path.join(F, "feature_and_index.pkl"))
    assert idx.kind == "retrieval" and idx.search == "ivf" and set(idx.speakers) == {0, 1}
    z, _ = _fixture_retrieval()
    for sid in (0, 1):
        np.testing.assert_array_equal(idx.speakers[sid].vectors, z[f"rows_{sid}"])
        out = np.asarray(idx.mix(z["units"][sid], speaker=sid, ratio=0.5))
        np.testing.assert_allclose(out, z[f"mixed_{sid}_0.5"], rtol=0, atol=TOL)


def test_faiss_pkl_without_faiss_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(timbre.TimbreFileError, match="faiss-cpu"):
        timbre.load_timbre_index(os.path.join(F, "feature_and_index.pkl"))


def test_npz_round_trip_and_speaker_mix(tmp_path):
    z, spk = _fixture_retrieval()
    idx = timbre.TimbreIndex("retrieval", spk, search="ivf")
    path = idx.save(str(tmp_path / "index.npz"))
    back = timbre.load_timbre_index(path)
    assert back.search == "ivf" and set(back.speakers) == {0, 1}
    u = z["units"][:, :40]
    a = np.asarray(back.mix(u, speaker=0, ratio=1.0))
    b = np.asarray(back.mix(u, speaker=1, ratio=1.0))
    # a 30/70 mix targets 0.3 * target_0 + 0.7 * target_1
    m = np.asarray(back.mix(u, speaker={0: 3, 1: 7}, ratio=0.5))
    np.testing.assert_allclose(m, 0.5 * u + 0.5 * (0.3 * a + 0.7 * b), rtol=0, atol=TOL)
    # exact search of the same index: a different (finer) neighbour set, same rule
    ex = timbre.load_timbre_index(path, search="exact")
    e = np.asarray(ex.mix(u[:1], speaker=0, ratio=1.0))[0]
    d, i = timbre.topk_exact(u[0], z["rows_0"])
    w = np.asarray(timbre.retrieval_weights(d))
    np.testing.assert_allclose(e, np.einsum("mk,mkc->mc", w, z["rows_0"][np.asarray(i)]),
                               rtol=0, atol=TOL)


def test_retrieval_weights_are_the_reference_rule_and_stable():
    import jax.numpy as jnp
    d = np.array([[1.0, 2.0, 4.0], [0.0, 1.0, 1.0], [1e-30, np.inf, np.inf]], np.float32)
    w = np.asarray(timbre.retrieval_weights(jnp.asarray(d)))
    ref = np.square(1 / d[0]) / np.square(1 / d[0]).sum()
    np.testing.assert_allclose(w[0], ref, rtol=1e-6)
    np.testing.assert_allclose(w[1], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(w[2], [1, 0, 0])


def test_bad_files_get_one_clear_sentence(tmp_path):
    from svcjax.interop import torch_save
    bad = tmp_path / "kmeans.pt"
    torch_save.save({"alice": {"centres": np.zeros((3, 4), np.float32)}}, str(bad))
    with pytest.raises(timbre.TimbreFileError, match="cluster_centers_"):
        timbre.load_timbre_index(bad)
    evil = tmp_path / "feature_and_index.pkl"
    evil.write_bytes(pickle.dumps({0: os.getcwd}, protocol=2))  # a global that is not faiss
    with pytest.raises(timbre.TimbreFileError, match="refusing"):
        timbre.load_timbre_index(evil)
    junk = tmp_path / "x.npz"
    junk.write_bytes(b"PK\x03\x04not a zip")
    with pytest.raises(timbre.TimbreFileError):
        timbre.load_timbre_index(junk)
    idx = timbre.load_timbre_index(os.path.join(F, "kmeans_32.pt"))
    with pytest.raises(KeyError, match="not in the cluster index"):
        idx.mix(np.zeros((1, 5, 32), np.float32), speaker="carol")
    with pytest.raises(ValueError, match="unit size 32"):
        idx.mix(np.zeros((1, 5, 16), np.float32), speaker="alice")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        idx.mix(np.zeros((1, 5, 32), np.float32), speaker="alice", ratio=1.5)


def test_jax_kmeans_matches_sklearn_minibatch_inertia():
    from svcjax.timbre import kmeans
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "fixtures"))
    from make_timbre import blob_data
    ref = json.load(open(os.path.join(F, "kmeans_inertia.json")))
    x = blob_data()
    # the same seed budget: sklearn's best of its 3 fits (one k-means++ init each) against
    # the best of 3 k-means++ inits here
    runs = len(ref["minibatch_inertia"])
    centres, inertia = kmeans.kmeans(x, ref["n_clusters"], n_init=runs, seed=0)
    assert centres.shape == (ref["n_clusters"], x.shape[1])
    lab = np.argmin(((x[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(inertia, ((x - centres[lab]) ** 2).sum(), rtol=1e-4)
    assert inertia <= 1.01 * min(ref["minibatch_inertia"]), (inertia, ref)


# --------------------------------------------------------------------- training from a corpus


@pytest.fixture(scope="module")
def corpus_dir():
    from tests.training_corpus import tiny_corpus
    return tiny_corpus()


def test_train_cluster_and_index_from_a_corpus(corpus_dir, tmp_path):
    from svcjax import cli
    from svcjax.data import corpus
    from svcjax.timbre import kmeans
    units = kmeans.corpus_units(corpus_dir)
    names = corpus.load_metadata(corpus_dir)["speakers"]
    assert set(units) == set(names) and all(u.ndim == 2 for u in units.values())
    npz, pt, idx = (str(tmp_path / n) for n in ("km.npz", "kmeans_8.pt", "index.npz"))
    assert cli.main(["train-cluster", corpus_dir, npz, "--n-clusters", "8"]) == 0
    assert cli.main(["train-cluster", corpus_dir, pt, "--n-clusters", "8", "--minibatch",
                     "--max-iter", "3"]) == 0
    assert cli.main(["train-index", corpus_dir, idx]) == 0
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())
    a, b = timbre.load_timbre_index(npz), timbre.load_timbre_index(pt)
    for spk, x in units.items():
        c = a.speakers[spk].vectors
        assert c.shape == (min(8, len(x)), x.shape[1])
        # converged: one more Lloyd step (centres to their frames' means) gains < 0.1 %
        lab = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), axis=1)
        inertia = ((x - c[lab]) ** 2).sum()
        moved = np.stack([x[lab == j].mean(0) if (lab == j).any() else c[j]
                          for j in range(len(c))])
        assert ((x - moved[lab]) ** 2).sum() >= (1 - 1e-3) * inertia
        assert b.speakers[spk].vectors.shape == c.shape
    r = timbre.load_timbre_index(idx)
    assert r.kind == "retrieval" and r.search == "exact"
    for spk, x in units.items():
        # every frame kept (fewer than 2e5), shuffled
        rows = r.speakers[spk].vectors
        np.testing.assert_array_equal(np.sort(rows, axis=0), np.sort(x, axis=0))
        # a frame of the index retrieves itself (distance 0 takes all the weight)
        out = np.asarray(r.mix(x[None, :5], speaker=spk, ratio=1.0))[0]
        np.testing.assert_allclose(out, x[:5], atol=1e-5)
    # the existing file is kept without --overwrite
    before = open(npz, "rb").read()
    assert cli.main(["train-cluster", corpus_dir, npz, "--n-clusters", "8"]) == 1
    assert open(npz, "rb").read() == before


def test_reference_layout_written_without_torch_loads_in_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from svcjax.timbre import kmeans
    c = {"alice": np.arange(12, dtype=np.float32).reshape(3, 4)}
    path = kmeans.write_reference_cluster(c, str(tmp_path / "kmeans_3.pt"))
    d = torch.load(path, weights_only=False)  # as the reference's cluster/__init__.py loads
    assert d["alice"]["n_features_in_"] == 4
    np.testing.assert_array_equal(d["alice"]["cluster_centers_"], c["alice"])


def test_kmeans_resumes_from_its_state(tmp_path):
    from svcjax.timbre import kmeans
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 4)).astype(np.float32)
    state = str(tmp_path / "state.npz")
    full, _ = kmeans.kmeans(x, 5, max_iter=6, tol=0, seed=1)
    kmeans.kmeans(x, 5, max_iter=3, tol=0, seed=1, state_path=state)
    logs = []
    resumed, _ = kmeans.kmeans(x, 5, max_iter=6, tol=0, seed=1, state_path=state,
                               log=logs.append)
    assert any("resuming k-means at iteration 3" in m for m in logs)
    np.testing.assert_allclose(resumed, full, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- conversion


def test_convert_mixes_units_toward_the_speaker_also_in_a_speaker_mix():
    from svcjax.runtime import converter as pipeline
    from tests.test_pipeline import SR, _voiced, identity_converter
    conv, sov = identity_converter()         # units are the audio, 512 samples a frame
    rng = np.random.default_rng(0)
    centres = {"alto": rng.standard_normal((1, 512)).astype(np.float32) * 0.1,
               "tenor": rng.standard_normal((1, 512)).astype(np.float32) * 0.1}
    index = timbre.TimbreIndex("cluster", {k: timbre.SpeakerArrays(v) for k, v in centres.items()})
    x = _voiced(2 * SR, 5)
    n = len(x) // 512 * 512
    opts = dict(pad_seconds=0.0, seed=None)
    (plain,) = conv.convert([x], pipeline.ConvertOptions(speaker="alto", **opts), progress=False)
    (y,) = conv.convert([x], pipeline.ConvertOptions(speaker="alto", cluster_model=index,
                                                     cluster_ratio=0.5, **opts), progress=False)
    np.testing.assert_allclose(y[:n], 0.5 * plain[:n] + 0.5 * np.tile(centres["alto"][0], n // 512),
                               atol=1e-6)
    # a fixed 25/75 mix: frames move toward 0.25 alto + 0.75 tenor
    (m,) = conv.convert([x], pipeline.ConvertOptions(speaker={"alto": 0.25, "tenor": 0.75},
                                                     cluster_model=index, cluster_ratio=1.0,
                                                     **opts), progress=False)
    np.testing.assert_allclose(
        m[:n], np.tile(0.25 * centres["alto"][0] + 0.75 * centres["tenor"][0], n // 512),
        atol=1e-6)
    with pytest.raises(ValueError, match="'bass'.*not in the cluster index"):
        conv.convert([x], pipeline.ConvertOptions(speaker="bass", cluster_model=index,
                                                  cluster_ratio=0.5), progress=False)
    with pytest.raises(ValueError, match="cluster_ratio needs"):
        conv.convert([x], pipeline.ConvertOptions(speaker="alto", cluster_ratio=0.5))
    with pytest.raises(ValueError, match=r"cluster_ratio must be in \[0, 1\]"):
        conv.convert([x], pipeline.ConvertOptions(speaker="alto", cluster_model=index,
                                                  cluster_ratio=2))


@pytest.fixture
def restore_cache():
    """The CLI turns JAX's persistent compilation cache on for the process; off again after."""
    yield
    import jax
    from jax._src import compilation_cache as cc
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    cc.reset_cache()


@pytest.mark.slow  # ~50 s on 2 busy cores: builds the tiny models, compiles a conversion
def test_cli_convert_with_a_cluster_model(tmp_path, capsys, restore_cache):
    from svcjax import cli
    from svcjax.audio import io
    from tests import tiny_models
    models = tiny_models.make_model_dirs(tmp_path / "models")
    voices = os.path.join(os.path.dirname(__file__), "fixtures", "voices")
    a, sr = io.load_audio(os.path.join(voices, "slt_16k.wav"))
    src = tmp_path / "slt.wav"
    io.save_audio(src, a[: int(1.0 * sr)], sr)
    rng = np.random.default_rng(1)
    good, bad = str(tmp_path / "km.npz"), str(tmp_path / "km16.npz")
    timbre.TimbreIndex("cluster", {s: timbre.SpeakerArrays(rng.standard_normal((4, 32)))
                                   for s in ("alto", "tenor")}).save(good)
    timbre.TimbreIndex("cluster", {"alto": timbre.SpeakerArrays(rng.standard_normal((4, 16)))}
                       ).save(bad)
    base = ["convert", str(src), "--model", str(models / "sovits"), "--encoder",
            str(models / "encoder"), "--f0-method", "dio", "--no-progress", "--speaker",
            "alto:0.5,tenor:0.5", "--cluster-ratio", "0.5",
            "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "out.wav"
    assert cli.main(base + ["-o", str(out), "--cluster-model", good]) == 0, \
        capsys.readouterr().err
    y, _ = io.load_audio(out, allow_silent=True)
    assert np.isfinite(y).all() and len(y) > 0
    out2 = tmp_path / "out2.wav"
    assert cli.main(base + ["-o", str(out2), "--cluster-model", bad]) == 1
    err = capsys.readouterr().err
    assert "units of size 16, the model uses 32" in err and "Traceback" not in err
    assert not out2.exists()


def test_eval_settings_at_each_cluster_ratio():
    from configs import eval as eval_config
    from svcjax.eval import runner as evaluate
    c = eval_config.get_config("variant=test")
    assert [n for n, _ in evaluate.settings_from_config(c, False)] == ["sovits"]
    c.cluster_model = "km.npz"
    c.cluster_ratios = (0.0, 0.5)
    got = evaluate.settings_from_config(c, True)
    assert [n for n, _ in got][:4] == ["sovits_cr0", "sovits_cr50", "diff_k4_ddim_x2_cr0",
                                       "diff_k4_ddim_x2_cr50"]
    assert got[1][1]["cluster_ratio"] == 0.5 and got[1][1]["cluster_model"] == "km.npz"
    assert "cluster_ratio" not in got[0][1]
    c.cluster_model = ""
    with pytest.raises(ValueError, match="cluster_ratios needs cluster_model"):
        evaluate.settings_from_config(c, False)
