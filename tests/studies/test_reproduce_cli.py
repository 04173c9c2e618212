"""``python -m vgsn.reproduce``: --report-only on a folder of no finished runs never replaces
a document; the document goes to the --out folder unless --doc names one; a negative seed is
one line, exit 2."""
import pytest

from vgsn.studies import reproduce

from _paths import ROOT  # noqa: E402


def _exit(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        reproduce.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return exit_.value.code, err


def test_report_only_on_an_empty_folder_leaves_every_document(tmp_path, capsys):
    repo_doc = ROOT / "docs" / "reproduction.md"
    before = repo_doc.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    # default: the document goes into --out, never into the repository's docs/
    assert reproduce.main(["--out", str(empty), "--report-only"]) == 0
    capsys.readouterr()
    assert (empty / "reproduction.md").is_file()
    assert repo_doc.read_bytes() == before
    # a document already there is not replaced by a report of no runs
    mine = tmp_path / "mine.md"
    mine.write_text("my report\n")
    for doc in (str(mine), str(repo_doc)):
        code, err = _exit(capsys, ["--out", str(empty), "--report-only", "--doc", doc])
        assert code == 2 and err == [f"python -m vgsn.reproduce: error: --out {empty}: no "
                                     f"finished runs there, so {doc} is left as it is; give "
                                     f"the folder of the runs"]
    assert mine.read_text() == "my report\n" and repo_doc.read_bytes() == before


def test_a_negative_seed_is_one_line(tmp_path, capsys):
    code, err = _exit(capsys, ["--out", str(tmp_path), "--seeds", "-1"])
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("python -m vgsn.reproduce: error: --seeds: '-1' is not a seed"), err
