"""Sweeps: commands from overrides, runs in turn, one table of every run's metrics."""

import csv
import json
import os
import sys

import pytest

from svcjax import cli

from svcjax.eval import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy_sweep(tmp_path):
    path = tmp_path / "toy_sweep.py"
    path.write_text('''
def get_sweep(arg=None):
    return {"base": "tests/toy_config.py",
            "program": ["{python}", "-m", "tests.toy_train"],
            "common": {"train.num_steps": 3},
            "runs": [{"name": "lr_small", "overrides": {"train.learning_rate": 0.001}},
                     {"name": "lr_large", "overrides": {"train.learning_rate": 0.05,
                                                        "train.progress": False}}]}
''')
    return str(path)


def test_sweep_of_two_variants_gives_a_table(tmp_path, monkeypatch, capsys):
    work = tmp_path / "runs"
    spec = sweep.load_sweep(_toy_sweep(tmp_path))
    cmds = sweep.commands(spec, str(work), python=sys.executable)
    assert [n for n, _ in cmds] == ["lr_small", "lr_large"]
    assert "--config.train.learning_rate=0.05" in cmds[1][1]
    assert "--config.train.num_steps=3" in cmds[0][1]
    # eval.py's contract: WORKDIR/<run>/eval/metrics.json
    os.makedirs(work / "lr_small" / "eval")
    (work / "lr_small" / "eval" / "metrics.json").write_text(json.dumps({"mcd": 6.5, "f0_rmse": 12}))
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(ROOT)
    rc = cli.main(["sweep", _toy_sweep(tmp_path), "--workdir", str(work)])
    out = capsys.readouterr().out
    assert rc == 0, open(work / "lr_large" / "train.log").read()[-2000:]
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["run", "train.learning_rate"]
    assert lines[2].startswith("lr_small") and lines[3].startswith("lr_large")
    rows = list(csv.DictReader(open(work / "sweep.csv")))
    assert [r["run"] for r in rows] == ["lr_small", "lr_large"]
    assert all(r["status"] == "ok" and r["step"] == "3" for r in rows)
    assert float(rows[0]["loss/total"]) > 0 and float(rows[1]["val/loss"]) > 0
    assert rows[0]["eval/mcd"] == "6.5" and rows[1]["eval/mcd"] == ""
    assert rows[0]["loss/total"] != rows[1]["loss/total"]  # the override took effect


def test_print_mode_and_bad_files(tmp_path, capsys):
    assert cli.main(["sweep", _toy_sweep(tmp_path), "--workdir", str(tmp_path), "--print"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "--workdir=" in lines[0] and "tests.toy_train" in lines[0]
    bad = tmp_path / "bad.py"
    bad.write_text("def get_sweep(arg=None):\n    return {'base': 'x.py', 'runs': "
                   "[{'name': 'a'}, {'name': 'a'}]}\n")
    with pytest.raises(ValueError, match="unique"):
        sweep.load_sweep(str(bad))
    assert cli.main(["sweep", str(tmp_path / "missing.py"), "--workdir", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs", "sweeps"))
                                        if f.endswith(".py") and not f.startswith("_")))
def test_shipped_sweeps_apply_to_their_base(name):
    """Every run's overrides name existing fields of the base config (config_flags parses them)."""
    from absl import flags
    from ml_collections import config_flags

    spec = sweep.load_sweep(os.path.join(ROOT, "configs", "sweeps", f"{name}.py"))
    base = spec["base"].split(":")[0]
    assert os.path.exists(os.path.join(ROOT, base)), f"{name}: base config {base} not found"
    for run, argv in sweep.commands(spec, "/tmp/w"):
        args = ["train.py"] + argv[2:]
        fv = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                        sys_argv=args)
        flags.DEFINE_string("workdir", None, "", flag_values=fv)
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            fv(args)
            cfg = fv.config
        finally:
            os.chdir(cwd)
        for k, v in {**spec["common"], **dict(spec["runs"][[r["name"] for r in spec["runs"]].index(run)]["overrides"])}.items():
            node = cfg
            for part in k.split("."):
                node = node[part]
            assert node == v or str(node) == str(v), (run, k, node, v)
