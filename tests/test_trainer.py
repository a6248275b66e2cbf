"""The training loop: logging, checkpoints, resume, preemption, multi-process, non-finite stop.

These run :func:`svcjax.train.loop.train` on the small ``ToyTask`` of ``tests/standins.py`` (a
grain pipeline and a 2-layer net), so they test the loop itself in seconds; the GAN and
diffusion steps have their own tests.
"""

import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from svcjax.train.metric_writer import NonFiniteError, read_metrics
from svcjax.train.loop import make_optimizer, train
from tests.standins import make_toy_task, toy_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(workdir, num_steps, **kw):
    cfg = toy_config(num_steps=num_steps, **kw)
    return train(cfg, str(workdir), task=make_toy_task(cfg))


def _train_records(workdir):
    return {r["step"]: r for r in read_metrics(str(workdir)) if "loss/total" in r}


def _assert_same(a, b, steps, keys=("loss/total", "grad_norm/model", "param_norm/model",
                                    "learning_rate")):
    for s in steps:
        for k in keys:
            assert a[s][k] == pytest.approx(b[s][k], rel=1e-6, abs=1e-7), (s, k)


REF_STEPS = 10


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted 10-step run, shared by the tests that compare against it."""
    work = tmp_path_factory.mktemp("reference")
    res = _run(work, REF_STEPS, checkpoint_every=5)
    return work, res


def test_train_writes_everything(reference):
    work, res = reference
    assert res.step == REF_STEPS and not res.preempted and res.compiles == 1
    recs = _train_records(work)
    assert sorted(recs) == list(range(1, REF_STEPS + 1))
    for r in recs.values():
        for k in ("loss/total", "grad_norm/model", "param_norm/model", "learning_rate",
                  "steps_per_s", "audio_seconds_per_s"):
            assert np.isfinite(r[k]), k
    # 40 examples / batch 8 = 5 steps per epoch: the LR decays entering epochs 2 and 3
    assert recs[5]["learning_rate"] == pytest.approx(1e-2)
    assert recs[6]["learning_rate"] == pytest.approx(1e-2 * 0.999875)
    assert recs[10]["learning_rate"] == pytest.approx(1e-2 * 0.999875)
    val = [r for r in read_metrics(str(work)) if "val/loss" in r]
    assert [r["step"] for r in val] == [2, 4, 6, 8, 10]
    cfg = json.load(open(work / "config.json"))
    assert cfg["train"]["num_steps"] == REF_STEPS and cfg["kind"] == "toy"
    assert sorted(os.listdir(work / "checkpoints"), key=int) == ["5", "10"]  # keep 2


def test_tensorboard_event_contents(reference):
    from tensorboardX.proto import event_pb2
    import struct

    work, _ = reference
    tags = set()
    (path,) = glob.glob(str(work / "tensorboard" / "events.*"))
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
        pos += 12 + n + 4
        for v in ev.summary.value:
            kind = v.WhichOneof("value")
            tags.add((v.tag, kind))
            if kind == "image":
                assert v.image.encoded_image_string.startswith(b"\x89PNG")
    for tag in ("loss/total", "learning_rate", "grad_norm/model", "param_norm/model",
                "steps_per_s", "audio_seconds_per_s", "val/loss"):
        assert (tag, "simple_value") in tags, tag
    assert ("val/audio_0", "audio") in tags
    assert ("val/mel_0", "image") in tags


def test_save_restore_continue_gives_same_numbers(reference, tmp_path):
    first = _run(tmp_path, 4)
    assert first.step == 4
    second = _run(tmp_path, REF_STEPS)  # same workdir: resumes from step 4
    assert second.step == REF_STEPS and second.compiles == 1
    a, b = _train_records(reference[0]), _train_records(tmp_path)
    assert sorted(b) == list(range(1, REF_STEPS + 1))
    _assert_same(a, b, range(1, REF_STEPS + 1))


def test_fsdp_mesh_gives_the_same_numbers(reference, tmp_path):
    """Parameters and optimizer states split over an fsdp axis (data=4 x fsdp=2): same losses,
    and a restart restores the sharded state."""
    cfg = toy_config(num_steps=3)
    cfg.mesh = dict(data=4, fsdp=2, fsdp_min_size=1)
    task = make_toy_task(cfg)
    train(cfg, str(tmp_path), task=task)
    cfg.train.num_steps = 5
    train(cfg, str(tmp_path), task=make_toy_task(cfg))
    _assert_same(_train_records(reference[0]), _train_records(tmp_path), range(1, 6))


def test_half_written_saves_are_removed_and_never_restored(reference, tmp_path, caplog):
    """What a run killed during an asynchronous save leaves (Orbax's temporary step folder)
    is removed by the rerun, which resumes from the newest finished step."""
    _run(tmp_path, 4, checkpoint_every=2)
    ckpt = tmp_path / "checkpoints"
    shutil.copytree(ckpt / "4", ckpt / "6.orbax-checkpoint-tmp-1700000000")
    (ckpt / "7.orbax-checkpoint-tmp").mkdir()
    with caplog.at_level(logging.INFO, logger="svcjax"):
        res = _run(tmp_path, 8, checkpoint_every=1000)
    assert res.step == 8
    err = caplog.text
    assert err.count("a checkpoint save that was interrupted") == 2
    assert f"resumed from {ckpt}/4" in err
    assert sorted(os.listdir(ckpt), key=int) == ["4", "8"]
    _assert_same(_train_records(reference[0]), _train_records(tmp_path), range(1, 9))


def test_non_finite_stops_with_a_clear_message(tmp_path):
    cfg = toy_config(num_steps=6)
    cfg.data.nan_at = 5  # one example of the shuffled data is NaN
    with pytest.raises(NonFiniteError, match=r"loss/total became nan at step \d"):
        train(cfg, str(tmp_path), task=make_toy_task(cfg))
    bad = int(open(tmp_path / "metrics.jsonl").read().count("\n")) + 1
    # no checkpoint holds the non-finite state
    saved = [int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]
    assert all(s < bad for s in saved)


def test_optimizer_matches_torch_adamw_and_exponential_lr():
    torch = pytest.importorskip("torch")
    import jax.numpy as jnp
    import optax

    tcfg = toy_config().train  # train.py's AdamW: lr 1e-4, betas (0.8, 0.99), eps 1e-9
    tcfg.update(learning_rate=1e-4, lr_decay=0.9)  # decay visible within a few epochs
    tx, sched = make_optimizer(tcfg, steps_per_epoch=2)
    rs = np.random.RandomState(0)
    w0 = rs.randn(5, 3).astype(np.float32)
    grads = [rs.randn(5, 3).astype(np.float32) for _ in range(6)]
    p = jnp.asarray(w0)
    st = tx.init(p)
    for g in grads:
        u, st = tx.update(jnp.asarray(g), st, p)
        p = optax.apply_updates(p, u)
    tw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = torch.optim.AdamW([tw], 1e-4, betas=(0.8, 0.99), eps=1e-9)
    lr = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    for i, g in enumerate(grads):
        tw.grad = torch.from_numpy(g)
        opt.step()
        if i % 2 == 1:
            lr.step()  # per epoch of 2 steps
    np.testing.assert_allclose(np.asarray(p), tw.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert float(sched(5)) == pytest.approx(1e-4 * 0.9 ** 2)


def _env(devices):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_sigterm_saves_and_resume_continues_exactly(reference, tmp_path):
    """Kill a training subprocess mid-run; the resumed run's numbers equal an uninterrupted run's."""
    work = tmp_path / "killed"
    cmd = [sys.executable, "-m", "tests.standins", str(work), "1000", "--sleep", "0.2",
           "--checkpoint-every", "1000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(8), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if len(_train_records(work)) >= 2:
                break
            if proc.poll() is not None:
                raise AssertionError(proc.communicate())
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "preempted=True" in out and "checkpoint saved" in err
    stopped = int(out.split("step=")[1].split()[0])
    assert 2 <= stopped < REF_STEPS - 1, stopped
    assert os.listdir(work / "checkpoints") == [str(stopped)]
    # resume in-process (same 8 devices) and compare with the uninterrupted reference run
    res = _run(work, REF_STEPS, checkpoint_every=1000)
    assert res.step == REF_STEPS
    a, b = _train_records(reference[0]), _train_records(work)
    assert sorted(b) == list(range(1, REF_STEPS + 1))
    _assert_same(a, b, range(1, REF_STEPS + 1))


def test_hard_kill_resumes_from_the_last_periodic_checkpoint(reference, tmp_path):
    """SIGKILL (no chance to save): the rerun resumes from the newest periodic checkpoint,
    steps logged after it are replaced, and the numbers equal the uninterrupted run's."""
    work = tmp_path / "crashed"
    cmd = [sys.executable, "-m", "tests.standins", str(work), "1000", "--sleep", "0.2",
           "--checkpoint-every", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(8), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(_train_records(work)) < 5:
            if proc.poll() is not None:
                raise AssertionError(proc.communicate())
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    logged = max(_train_records(work))
    assert logged < REF_STEPS
    _run(work, REF_STEPS, checkpoint_every=2)
    steps = [r["step"] for r in read_metrics(str(work)) if "loss/total" in r]
    assert steps == list(range(1, REF_STEPS + 1))  # each step once
    _assert_same(_train_records(reference[0]), _train_records(work), range(1, REF_STEPS + 1))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    """2 processes x 2 CPU devices (gloo) give the losses of 1 process x 4 devices."""
    coord = f"127.0.0.1:{_free_port()}"
    multi = tmp_path / "multi"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.standins", str(multi), "4", "--multi", coord, "2", str(i)],
        cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    single = subprocess.Popen(
        [sys.executable, "-m", "tests.standins", str(tmp_path / "single"), "4"],
        cwd=ROOT, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = []
    try:
        for p in procs + [single]:
            outs.append(p.communicate(timeout=240))
    finally:
        for p in procs + [single]:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs + [single], outs):
        assert p.returncode == 0, err[-3000:]
        assert "RESULT step=4" in out
    a, b = _train_records(tmp_path / "single"), _train_records(multi)
    assert sorted(b) == [1, 2, 3, 4]
    _assert_same(a, b, range(1, 5))
    # both processes wrote their data-iterator state into the shared checkpoint
    assert sorted(os.listdir(multi / "checkpoints" / "4" / "data")) == [
        "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]


# ---------------------------------------------------------------------------------------------
# The task registry and where training settings come from
# ---------------------------------------------------------------------------------------------

def test_registry_maps_kinds_to_tasks():
    import ml_collections

    from svcjax.train import tasks

    assert tasks.task_class("sovits").__name__ == "SovitsTask"
    assert tasks.task_class("diffusion").__name__ == "DiffusionTask"
    with pytest.raises(ValueError, match=r"^config\.kind='gan' is not a trainable model; "
                                         r"known: diffusion, sovits$"):
        tasks.make_task(ml_collections.ConfigDict({"kind": "gan"}))
    with pytest.raises(ValueError, match="must be 'module:Class'"):
        tasks.register("toy", "tests.standins.ToyTask")
    assert "toy" not in tasks.TASKS


def test_loop_does_not_import_the_tasks():
    """The loop depends on the task interface and the registry; a task module is imported
    only when a config names it."""
    code = ("import sys, svcjax.train.loop; "
            "print(sorted(m for m in sys.modules if m.startswith('svcjax.train.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env=_env(1), check=True).stdout
    loaded = eval(out.strip().splitlines()[-1])
    assert "svcjax.train.task" in loaded and "svcjax.train.tasks" in loaded
    assert "svcjax.train.sovits" not in loaded and "svcjax.train.diffusion" not in loaded


def test_missing_training_field_is_one_sentence(tmp_path):
    cfg = toy_config(num_steps=None)
    with pytest.raises(ValueError, match=r"^config\.train has no num_steps; the training "
                                         r"configs in configs/ .* set every training field$"):
        train(cfg, str(tmp_path), task=make_toy_task(cfg))
    cfg = toy_config(betas=None, eps=None)
    task = make_toy_task(cfg)
    with pytest.raises(ValueError, match=r"^config\.train has no betas, eps; "):
        task.setup_optimizers(1)
    assert not os.listdir(tmp_path)  # refused before anything was written


@pytest.mark.parametrize("kind", ["sovits", "diffusion"])
def test_configs_are_the_one_source_of_training_settings(kind):
    """Every field the loop, the optimizer and the task read comes from configs/ or, for what
    the reference's training script hard-codes, from the task's ``script_constants``; a value
    is never in both (the config declares those fields as None placeholders)."""
    from configs import diffusion_44k, sovits_44k
    from svcjax.train.task import LOOP_FIELDS, OPTIMIZER_FIELDS, train_config
    from svcjax.train.tasks import task_class

    module, variants, extra = {
        "sovits": (sovits_44k, ("full", "tiny", "test"), ("vol_aug",)),
        "diffusion": (diffusion_44k, ("full", "shallow", "test"), ("pitch_aug",))}[kind]
    cls = task_class(kind)
    for variant in variants:
        cfg = module.get_config(f"variant={variant}")
        assert cfg.kind == kind
        tcfg = train_config(cfg, cls.script_constants)
        fields = LOOP_FIELDS + OPTIMIZER_FIELDS + ("compute_dtype",) + cls.train_fields + extra
        assert [f for f in fields if tcfg.get(f) is None] == [], variant
        resolved = cfg.train.copy_and_resolve_references()
        assert {k: resolved[k] for k in cls.script_constants} == \
            {k: None for k in cls.script_constants}, variant
