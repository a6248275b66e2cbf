"""The dependency-free safetensors reader gives what the safetensors package gives."""

import numpy as np
import pytest

from svcjax.interop import safetensors_reader


def test_matches_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    import ml_dtypes
    rng = np.random.default_rng(0)
    tensors = {"w": rng.standard_normal((3, 4, 5)).astype(np.float32),
               "h": rng.standard_normal(7).astype(np.float16),
               "i": np.arange(6, dtype=np.int64).reshape(2, 3),
               "scalar": np.array(2.5, np.float64), "empty": np.zeros((0, 3), np.float32)}
    path = tmp_path / "m.safetensors"
    st.save_file(tensors, str(path), metadata={"format": "pt"})
    assert safetensors_reader.is_safetensors(path)
    got = safetensors_reader.load(path)
    assert set(got) == set(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)
    # bfloat16 (which NumPy lacks) comes back as ml_dtypes.bfloat16, bit-exact
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    t = torch.randn(4, 3).bfloat16()
    save_file({"b": t}, str(tmp_path / "b.safetensors"))
    b = safetensors_reader.load(tmp_path / "b.safetensors")["b"]
    assert b.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(b.astype(np.float32), t.float().numpy())


def test_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    assert not safetensors_reader.is_safetensors(bad)
    with pytest.raises(safetensors_reader.SafetensorsError, match="bad.safetensors"):
        safetensors_reader.load(bad)
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    short = tmp_path / "short.safetensors"
    short.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 8)
    with pytest.raises(safetensors_reader.SafetensorsError, match="does not fit its bytes"):
        safetensors_reader.load(short)
    with pytest.raises(FileNotFoundError):
        safetensors_reader.load(tmp_path / "none.safetensors")


def test_negative_dimensions_are_malformed(tmp_path):
    header = b'{"w":{"dtype":"F32","shape":[-1,-2],"data_offsets":[0,8]}}'
    neg = tmp_path / "neg.safetensors"
    neg.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 8)
    with pytest.raises(safetensors_reader.SafetensorsError, match="malformed entry"):
        safetensors_reader.load(neg)
