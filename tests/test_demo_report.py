"""make demo's closing table: every figure next to its meaning, NaN never printed as a number."""

from svcjax import demo


def test_report_explains_each_figure_and_missing_pitch():
    text = demo.measured_report({
        "sovits/f0_rmse_cents": 622.4, "sovits/gpe": 0.88, "sovits/vuv_error": 0.43,
        "sovits/mel_l1": 2.234, "sovits/tenor/mel_l1": 9.0,
        "diff_k100/f0_rmse_cents_missing": 4.0,   # evaluate.summarize: left out, counted
        "diff_k100/vuv_error": 0.5, "diff_k100/mel_l1": 3.73})
    lines = text.splitlines()
    assert lines[0] == "  [diff_k100]" and "  [sovits]" in lines
    sov = "\n".join(lines[lines.index("  [sovits]"):])
    assert "622 cents" in sov and "100 cents = a semitone" in sov
    assert "88%" in sov and "43%" in sov and "2.23" in sov
    assert "9.00" not in sov                     # per-speaker rows are not in the summary
    diff = "\n".join(lines[:lines.index("  [sovits]")])
    assert "nan" not in diff.lower()
    assert diff.count("not measured") == 2 and "voiced in both" in diff
    assert "in 4 clip(s)" in diff
    nan = demo.measured_report({"s/f0_rmse_cents": float("nan"), "s/gpe": 0.1})
    assert "nan" not in nan.lower() and "not measured" in nan and "10%" in nan


def test_printed_tensorboard_command_runs(tmp_path):
    """The TensorBoard line make demo prints is a command that exists here."""
    import shlex
    import subprocess

    cmd = demo.tensorboard_command(tmp_path)
    exe = shlex.split(cmd)[0]
    assert not cmd.startswith("pip install"), "make test installs tensorboard (viz extra)"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip()


def test_init_from_and_base_steps_are_checked_before_any_work(tmp_path, monkeypatch):
    """--init-from names a missing file or not a G_*.pth, --base-steps is not positive: one
    sentence naming it, before the corpus or anything else is made."""
    import pytest

    work = tmp_path / "demo"
    monkeypatch.setattr(demo, "_check_tools", lambda: pytest.fail("got past the checks"))
    cases = [(["--init-from", str(tmp_path / "G_9.pth")], "no such file"),
             (["--base-steps", "0"], "positive")]
    other = tmp_path / "model_9.pt"
    other.write_bytes(b"x")
    cases.append((["--init-from", str(other)], "named G_*.pth"))
    for extra, why in cases:
        with pytest.raises(SystemExit) as e:
            demo.main(["--workdir", str(work), *extra])
        msg = str(e.value)
        assert msg.startswith("svcjax.demo: --") and why in msg and msg.count("\n") == 0
    assert not work.exists()
    good = tmp_path / "G_9.pth"
    good.write_bytes(b"x")
    assert demo.check_init_from(str(good)) == str(good.resolve())


def test_the_demo_config_fine_tunes_from_init_from(tmp_path):
    """--init-from reaches the trainer's fine-tuning (``config.init_from``, whose loading is
    tested in test_train_sovits); the base model's run is the demo's generator config."""
    import sys

    sys.path.insert(0, str(demo.REPO))
    spk = {"a": 0, "b": 1}
    c = demo.sovits_config(tmp_path, spk, 200, 4, "/x/G_9.pth")
    assert c.init_from == "/x/G_9.pth" and c.train.num_steps == 200
    assert demo.sovits_config(tmp_path, spk, 200, 4).init_from == ""
    b = demo.base_config(tmp_path, spk, 20000, 4)
    d = demo.sovits_config(tmp_path, spk, 20000, 4)
    assert b.model == d.model and b.data == d.data and b.discriminator == d.discriminator
    assert b.train.num_steps == 20000 and b.train.keep_ckpts == 25 and not b.init_from
