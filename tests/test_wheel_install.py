"""The installed package stands alone: the wheel, installed in a fresh venv outside the
checkout, builds a corpus, converts and evaluates without the source tree on ``sys.path``.

How the venv reuses the dependencies without a network: the wheel is built from a copy of the
package sources (``pip wheel --no-deps --no-build-isolation``, so nothing is downloaded and
the checkout gets no ``build/``), a venv is made ``--without-pip`` in a temporary folder,
this interpreter's pip installs the wheel into it (``pip --python VENV/bin/python install
--no-deps --no-index``), and only then a ``.pth`` file in the venv's site-packages names this
environment's site-packages folders. Python adds the folders a ``.pth`` names to ``sys.path``
without processing the ``.pth`` files inside them, so the editable install of the checkout
(a ``.pth`` hook in those folders) stays inactive: the one ``svcjax`` the venv can import is
the wheel's. The commands run from a temporary working directory with ``PYTHONPATH`` unset,
and each check asserts where ``svcjax`` was imported from.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests import tiny_models

ROOT = Path(__file__).resolve().parent.parent
VOICES = ROOT / "tests" / "fixtures" / "voices"


def _clip(src: Path, dest: Path, seconds: float) -> Path:
    wav, sr = sf.read(str(src), dtype="float32")
    dest.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dest), wav[: int(seconds * sr)], sr)
    return dest


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A venv outside the checkout with the wheel installed; returns (venv, env, cwd)."""
    tmp = tmp_path_factory.mktemp("wheel")
    assert ROOT not in tmp.resolve().parents
    src = tmp / "src"
    shutil.copytree(ROOT / "svcjax", src / "svcjax",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                          str(src)], check=True, timeout=300)
    wheel, = (tmp / "dist").glob("svcjax-*.whl")

    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True,
                   timeout=120)
    python = env_dir / "bin" / "python"
    subprocess.run(pip + ["--python", str(python), "install", "--no-deps", "--no-index",
                          str(wheel)], check=True, timeout=300)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    # this environment's site-packages: the dependencies (make test's .venv sits inside the
    # checkout; what matters is that neither the checkout nor its sources are on the path)
    ours = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    assert not any(Path(p).resolve() in (ROOT, ROOT / "svcjax") for p in ours)
    Path(site.stdout.strip(), "_svcjax_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "SVCJAX_", "VIRTUAL_ENV"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="", SVCJAX_CACHE=str(tmp / "jax_cache"))
    cwd = tmp / "cwd"
    cwd.mkdir()
    return env_dir, env, cwd


def _run(venv, *argv, timeout=600):
    env_dir, env, cwd = venv
    r = subprocess.run([str(env_dir / "bin" / argv[0]), *argv[1:]], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{argv[:2]} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return r


def test_the_venv_imports_the_wheel_not_the_checkout(venv):
    env_dir = venv[0]
    r = _run(venv, "python", "-c", """if True:
        import json, sys
        import svcjax, svcjax.cli, svcjax.data.tfds_builder, svcjax.eval.config
        print(json.dumps(dict(files=[svcjax.__file__, svcjax.cli.__file__,
                                     svcjax.data.tfds_builder.__file__,
                                     svcjax.eval.config.PATH], path=sys.path)))""")
    got = json.loads(r.stdout)
    for f in got["files"]:
        assert env_dir.resolve() in Path(f).resolve().parents, f
    deps = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    for p in got["path"]:      # "" is the working directory, a temporary folder
        p = Path(p or venv[2]).resolve()
        # nothing of the checkout but this environment's site-packages (the dependencies;
        # make test's .venv is inside the checkout, its editable-install hook is not run)
        assert p in deps or (p != ROOT and ROOT not in p.parents), p
    # the console script runs the venv's interpreter
    assert (env_dir / "bin" / "svcjax").read_text().splitlines()[0] == \
        f"#!{env_dir / 'bin' / 'python'}"


def test_build_corpus_convert_and_eval_from_the_wheel(venv, tmp_path):
    raw = tmp_path / "raw"
    _clip(VOICES / "slt_16k.wav", raw / "alto" / "a.wav", 1.2)
    _clip(VOICES / "rms_16k.wav", raw / "alto" / "b.wav", 1.2)
    r = _run(venv, "svcjax", "build-corpus", str(raw), "--out", str(tmp_path / "data"),
             "--features", "volume,mel", "--val-per-speaker", "1")
    assert "corpus written to" in r.stdout
    folder = tmp_path / "data" / "svc_corpus" / "1.0.0"
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info["name"] == "svc_corpus"
    assert {s["name"]: sum(map(int, s["shardLengths"])) for s in info["splits"]} == \
        {"train": 1, "validation": 1}
    assert json.loads((folder / "metadata.json").read_text())["speakers"] == {"alto": 0}

    models = tiny_models.make_model_dirs(tmp_path / "models")
    out = tmp_path / "out.wav"
    r = _run(venv, "svcjax", "convert", str(raw / "alto" / "a.wav"), "-o", str(out),
             "-m", str(models / "sovits"), "-e", str(models / "encoder"), "--speaker", "tenor",
             "--f0-method", "dio", "--no-progress")
    assert r.stdout.strip() == str(out)
    wav, sr = sf.read(str(out), dtype="float32")
    assert sr == 44100 and len(wav) == int(1.2 * 44100)     # the input's length at 44.1 kHz
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0

    # the evaluation config ships with the package: no --config, no configs/ folder here;
    # the clip just converted, whose program the compilation cache already holds
    _clip(raw / "alto" / "a.wav", tmp_path / "evalset" / "alto" / "a.wav", 1.2)
    r = _run(venv, "svcjax", "eval", "--workdir", str(tmp_path / "ev"),
             f"--config.model={models / 'sovits'}", f"--config.encoder={models / 'encoder'}",
             f"--config.data.path={tmp_path / 'evalset'}", "--config.speakers=('tenor',)",
             "--config.metrics=('mel','rtf')", "--config.audio_samples=0")
    assert "sovits/mel_l1\t" in r.stdout
    metrics = json.loads((tmp_path / "ev" / "eval" / "metrics.json").read_text())
    assert np.isfinite(metrics["sovits/tenor/mel_l1"]) and metrics["sovits/tenor/rtf"] > 0
