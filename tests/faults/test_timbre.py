"""Fault cases for the timbre controls and model tools (import-index, train-cluster,
merge-models, compress): each drives the real command in a subprocess."""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path

from tests.faults import harness

FIX = Path(__file__).resolve().parents[1] / "fixtures"
AREA = "timbre"


class _Evil:
    """Unpickling this runs ``os.system`` in a permissive loader (it must not here)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickles_with_code_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    pkl = tmp_path / "feature_and_index.pkl"
    pkl.write_bytes(pickle.dumps({0: _Evil(marker)}, protocol=2))
    pt = tmp_path / "kmeans_10000.pt"
    with zipfile.ZipFile(pt, "w") as zf:  # a torch zip whose data.pkl calls os.system
        zf.writestr("kmeans_10000/data.pkl", pickle.dumps({"alice": _Evil(marker)},
                                                          protocol=2))
        zf.writestr("kmeans_10000/version", "3\n")
    for path, needle in ((pkl, "refusing to load"), (pt, "refuses to load global posix.system")):
        out = tmp_path / f"{path.stem}.npz"
        res = harness.run(["import-index", str(path), str(out)], timeout=300)
        harness.assert_clear_failure(res, needle)
        assert not marker.exists() and not out.exists() and not harness.leftovers(tmp_path)
        harness.record(AREA, f"{path.name} whose pickle calls os.system",
                       f"svcjax import-index {path.name} OUT.npz", "refused", res.last_line)


def test_truncated_and_wrong_layout_cluster_models(tmp_path):
    src = (FIX / "timbre" / "kmeans_32.pt").read_bytes()
    cut = tmp_path / "kmeans_cut.pt"
    cut.write_bytes(src[: len(src) // 2])
    res = harness.run(["import-index", str(cut), str(tmp_path / "a.npz")], timeout=300)
    harness.assert_clear_failure(res, "kmeans_cut.pt")
    assert not (tmp_path / "a.npz").exists() and not harness.leftovers(tmp_path)
    harness.record(AREA, "truncated kmeans_*.pt", "svcjax import-index kmeans_cut.pt OUT.npz",
                   "handled", res.last_line)


def test_retrieval_pkl_without_faiss_says_what_to_install(tmp_path):
    shim = tmp_path / "shim" / "faiss"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no faiss here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "shim"), str(harness.ROOT)])}
    out = tmp_path / "idx.npz"
    res = harness.run(["import-index", str(FIX / "timbre" / "feature_and_index.pkl"),
                       str(out)], env=env, timeout=300)
    harness.assert_clear_failure(res, "faiss-cpu")
    assert not out.exists()
    harness.record(AREA, "feature_and_index.pkl without faiss installed",
                   "svcjax import-index feature_and_index.pkl OUT.npz", "handled",
                   res.last_line)


def test_merge_with_different_shapes_and_compress_over_existing(tmp_path):
    from svcjax.interop import torch_pickle, torch_save
    m = FIX / "timbre" / "merge"
    sd = torch_pickle.load(m / "G_0.pth")
    sd["model"]["emb_g.weight"] = sd["model"]["emb_g.weight"][:2]
    other = torch_save.save(sd, str(tmp_path / "other.pth"))
    existing = tmp_path / "merged.pth"
    shutil.copy(m / "G_1.pth", existing)
    before = harness.snapshot(tmp_path)
    res = harness.run(["merge-models", str(m / "G_0.pth"), other, "--rates", "50,50",
                       str(tmp_path / "new.pth")], timeout=300)
    harness.assert_clear_failure(res, "emb_g.weight")
    assert not (tmp_path / "new.pth").exists()
    harness.record(AREA, "merge models of different shapes",
                   "svcjax merge-models A.pth B.pth --rates 50,50 OUT.pth", "handled",
                   res.last_line)
    res = harness.run(["compress", str(FIX / "sovits" / "tiny" / "G_1.pth"), str(existing)],
                      timeout=300)
    harness.assert_clear_failure(res, "--overwrite")
    assert not harness.changed(before, harness.snapshot(tmp_path))
    assert not harness.leftovers(tmp_path)
    harness.record(AREA, "compress onto an existing file", "svcjax compress G_1.pth OUT.pth",
                   "refused", res.last_line)


def test_train_cluster_on_a_folder_that_is_not_a_corpus(tmp_path):
    (tmp_path / "raw" / "alice").mkdir(parents=True)
    out = tmp_path / "km.npz"
    res = harness.run(["train-cluster", str(tmp_path / "raw"), str(out)], timeout=300)
    harness.assert_clear_failure(res, "build-corpus")
    assert not out.exists() and not (tmp_path / "km.npz.partial").exists()
    harness.record(AREA, "train-cluster on a folder of audio, not a built corpus",
                   "svcjax train-cluster ROOT OUT.npz", "handled", res.last_line)
