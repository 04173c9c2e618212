"""Settings as files: ``--print-config`` / ``--config FILE`` on the scripts, the sweep and
reproduce; precedence; the one meaning of ``--seeds``."""
import json
import subprocess
import sys

import pytest
import yaml

from vgsn.run import cli
from vgsn.run import config as C
from vgsn.run import presets as P
from vgsn.run import settings as S
from vgsn.studies import reproduce as R
from vgsn.studies import sweep as SW

from _paths import ROOT  # noqa: E402


def _printed(capsys, argv, script="mnist"):
    assert cli.cli_main(argv, script) == 0
    return capsys.readouterr().out


def _settings(text):
    return S.Preset.from_dict(yaml.safe_load(text))


def test_print_config_read_back_by_config_prints_the_same_settings(capsys, tmp_path):
    first = _printed(capsys, ["--preset", "mnist2-ork", "--lam-kl", "3", "--code2015",
                              "--set", "q_hidden=50,40", "--set", "pretrain_l2=2e-5",
                              "--out", str(tmp_path / "never"), "--print-config"])
    c = _settings(first)
    assert (c.lam_kl, c.q_hidden, c.pretrain_l2, c.momentum) == (3.0, (50, 40), 2e-5, 0.5)
    f = tmp_path / "run.yaml"
    f.write_text(first)
    second = _printed(capsys, ["--config", str(f), "--print-config"])
    body = [ln for ln in first.splitlines() if not ln.startswith("#")]
    assert [ln for ln in second.splitlines() if not ln.startswith("#")] == body
    assert _settings(second) == c
    assert list(tmp_path.iterdir()) == [f]          # trains nothing, makes no folder


def test_precedence_preset_then_file_then_flags_then_set(capsys, tmp_path):
    f = tmp_path / "part.yaml"
    f.write_text("name: tiny\nlam_kl: 2\nz_dim: 3\nseed: 11\nhidden: 9,9\n")
    c = _settings(_printed(capsys, ["--config", str(f), "--seed", "5", "--set", "z_dim=4",
                                    "--print-config"]))
    tiny = P.get_preset("tiny")
    assert c.batch_size == tiny.batch_size and c.name == "tiny"          # preset
    assert c.lam_kl == 2.0 and isinstance(c.lam_kl, float)             # file
    assert (c.q_hidden, c.p_hidden) == ((9, 9), (9, 9))                 # file, old name
    assert (c.seed, c.z_dim) == (5, 4)                                  # flag, --set
    c = _settings(_printed(capsys, ["--preset", "quick", "--config", str(f), "--print-config"]))
    assert c.name == "tiny" and c.batch_size == P.get_preset("quick").batch_size


def _error(capsys, argv, script="mnist"):
    with pytest.raises(SystemExit) as exit_:
        cli.cli_main(argv, script)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_a_flag_and_a_set_of_one_field_are_refused_in_one_line(capsys, tmp_path):
    line = _error(capsys, ["--quick", "--lam-kl", "2", "--set", "lam_kl=3"])
    assert line == ("run_mnist.py: error: --lam-kl 2.0 and --set lam_kl=3.0 both set lam_kl; "
                    "give one of them")
    assert "--no-figures and --set figures=True" in _error(
        capsys, ["--quick", "--no-figures", "--set", "figures=true"])
    assert "--fold 1 and --set tfd_fold=2" in _error(
        capsys, ["--preset", "tfd-ork", "--fold", "1", "--set", "tfd_fold=2"], "tfd")
    bad = tmp_path / "bad.yaml"
    for text, words in (("lam_kl: [1\n", "not YAML (line 2)"), ("- 1\n- 2\n", "a list"),
                        ("lam_kll: 1\n", "unknown setting 'lam_kll'"),
                        ("lam_kl: abc\n", "lam_kl must be a finite number, got 'abc'"),
                        ("z_dim: 1.5\n", "z_dim must be a whole number, got 1.5"),
                        ("name: nope\nz_dim: 0\n", "z_dim must be >= 1")):
        bad.write_text(text)
        line = _error(capsys, ["--config", str(bad), "--print-config"])
        assert f"--config {bad}" in line or "z_dim must be >= 1" in line, line
        assert words in line, line
    assert "no such file" in _error(capsys, ["--config", str(tmp_path / "no.yaml")])
    assert "drop --config" in _error(capsys, ["--resume", str(tmp_path), "--config", str(bad)])


def test_help_states_the_precedence():
    res = subprocess.run([sys.executable, str(ROOT / "run_tfd.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert "preset < --config FILE < flags < --set" in " ".join(res.stdout.split())
    assert "--print-config" in res.stdout


@pytest.mark.parametrize("items, seeds", [
    (["1", "2", "3"], [1, 2, 3]), (["1-3"], [1, 2, 3]), (["7", "1-2"], [7, 1, 2]),
    (["1,4"], [1, 4]), (["0"], [0])])
def test_seeds_are_a_list_everywhere(items, seeds):
    assert C.parse_seeds(items) == seeds


@pytest.mark.parametrize("items, words", [
    (["-1"], "'-1'"), (["x"], "'x'"), (["3-1"], "3-1 is empty"), (["1", "1-2"], "seed 1"),
    ([], "give one or more")])
def test_bad_seeds_are_one_line(items, words):
    with pytest.raises(ValueError, match="--seeds") as exc:
        C.parse_seeds(items)
    assert words in str(exc.value)


def test_sweep_reads_a_config_and_the_grid_and_set_win(tmp_path, capsys):
    f = tmp_path / "base.yaml"
    f.write_text("name: tiny\nlam_kl: 5\nz_dim: 3\nfigures: true\n")
    out = tmp_path / "sw"
    assert SW.main(["--config", str(f), "--grid", "lam_kl=1,2", "--set", "figures=false",
                    "--seeds", "1-2", "--out", str(out), "--dry-run", "--quiet"]) == 0
    spec = json.loads((out / "sweep.json").read_text())
    assert spec["preset"] == "tiny" and spec["seeds"] == [1, 2]
    assert spec["fixed"] == {"z_dim": "3", "figures": "false"}
    assert [p["settings"]["lam_kl"] for p in spec["points"]] == ["1.0", "1.0", "2.0", "2.0"]
    capsys.readouterr()
    assert SW.main(["--config", str(f), "--seeds", "4", "--print-config"]) == 0
    c = _settings(capsys.readouterr().out)
    assert (c.lam_kl, c.z_dim, c.seed, c.figures) == (5.0, 3, 4, True)


def test_reproduce_print_config_round_trips_and_changes_each_role(tmp_path, capsys):
    assert R.main(["--tiny", "--seeds", "1-2", "--print-config"]) == 0
    first = capsys.readouterr().out
    data = yaml.safe_load(first)
    assert sorted(data) == sorted(P.CHECK_PRESETS) and data["check-ork"]["lam_kl"] == 4.0
    data["check-ork"]["lam_kl"] = 6.0
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    assert R.main(["--tiny", "--seeds", "1", "2", "--config", str(f), "--print-config"]) == 0
    again = yaml.safe_load(capsys.readouterr().out)
    assert again["check-ork"]["lam_kl"] == 6.0 and again["check-var"] == data["check-var"]
    plan = R.plan([3], True, settings=R._read_config(f, P.CHECK_PRESETS, True))
    assert [(role, p.seed, p.lam_kl) for role, _, p in plan][1] == ("check-ork", 3, 6.0)
    assert not any(tmp_path.glob("check-*"))
