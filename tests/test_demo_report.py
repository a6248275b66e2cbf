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
