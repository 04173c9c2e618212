"""The README's commands run as shown.

Every line of the README's fenced ``bash`` blocks is a command a user may paste. Each one
is either run here, in a fresh temporary folder, and must exit with status 0 (the cheap
ones: ``--help``, ``--print-config``, ``--dry-run``, one run of the ``tiny`` preset), or
skipped for one of the reasons listed in ``SKIP``. A command that fits neither fails
``test_every_command_has_a_decision``, so a new command in the README gets one.

Script names and module paths come from the README alone: ``python X.py`` runs the
repository's ``X.py``, ``python -m M`` runs module ``M`` of this checkout (``PYTHONPATH``).
The commands run on the default back-end, as a user's would (``tests/conftest.py`` sets the
suite's C mode; it is dropped here unless ``VGSN_TEST_MODE`` asks for a mode).
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

#: The README is a user's guide: at most this many bytes, the results near the top.
MAX_BYTES = 15_000
RESULTS_WITHIN = 80
#: The two lines it opens with (they must work on a fresh machine).
FIRST_LINES = ["pip install -e . && python run_mnist.py --quick",
               "pip install -e .[test] && python -m pytest -q"]

#: Seconds one command may take (a cold C compile of the tiny preset takes minutes).
TIMEOUT = 900

# A placeholder the user replaces: an upper-case name, maybe with a file suffix
# (DIR, RUN_DIR, Q.pkl), standing alone as an argument.
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Za-z0-9]+)?$")


def _has(tokens, *flags):
    return any(t in flags for t in tokens)


def _preset(tokens):
    return tokens[tokens.index("--preset") + 1] if "--preset" in tokens[:-1] else None


def _script(tokens):
    """``X.py`` when the command is ``python X.py ...``, else None."""
    return tokens[1] if len(tokens) > 1 and tokens[0] == "python" and tokens[1].endswith(".py") \
        else None


#: (reason, test) pairs checked first: a command these match is never run.
HARD_SKIP = [
    ("installs packages (network, minutes)", lambda t: t[:1] == ["pip"]),
    ("runs the test suite itself", lambda t: t[:3] == ["python", "-m", "pytest"]),
    ("needs a Slurm cluster (sbatch)", lambda t: "slurm" in t),
    ("has a placeholder argument the user fills in (such as DIR or Q.pkl)",
     lambda t: any(_PLACEHOLDER.match(a) for a in t[1:] if not a.startswith("-"))),
]

#: (what, test): the commands that are run.
RUN = [
    ("prints help", lambda t: _has(t, "--help", "-h")),
    ("prints the settings", lambda t: _has(t, "--print-config")),
    ("plans without running", lambda t: _has(t, "--dry-run")),
    ("one run of the tiny preset (under a minute warm)",
     lambda t: _script(t) is not None and _preset(t) == "tiny"),
]

#: (reason, test) pairs for the commands that are not cheap enough to run here.
SKIP = HARD_SKIP + [
    ("the demo: about a minute, over this test's budget", lambda t: _has(t, "--quick")),
    ("a long experiment (an hour to days)",
     lambda t: _preset(t) not in (None, "tiny") and not _has(t, "--grid", "--seeds")),
    ("several runs (a study): minutes to hours", lambda t: _has(t, "--grid", "--seeds")),
    ("continues or reports a run or sweep folder an earlier, longer command made",
     lambda t: _has(t, "--resume", "--report", "--report-only")),
]


def _bash_blocks(text):
    """The lines of every fenced ``bash`` block, continuation lines joined."""
    blocks = re.findall(r"^```bash[ \t]*\n(.*?)^```", text, flags=re.S | re.M)
    for block in blocks:
        joined = re.sub(r"\\\n", " ", block)
        for line in joined.splitlines():
            if line.strip() and not line.strip().startswith("#"):
                yield line


def commands(text=None):
    """[(line, env, tokens)] for every command of the README's bash blocks; a line
    ``a && b`` gives two commands (same line); leading ``NAME=VALUE`` words go to env."""
    text = README.read_text() if text is None else text
    out = []
    for line in _bash_blocks(text):
        tokens = shlex.split(line, comments=True)
        part = []
        for tok in tokens + ["&&"]:
            if tok in ("&&", ";"):
                if part:
                    env = {}
                    while part and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", part[0]):
                        key, _, value = part.pop(0).partition("=")
                        env[key] = value
                    out.append((line, env, part))
                part = []
            else:
                part.append(tok)
    return out


def decide(tokens):
    """('run', what) or ('skip', reason) or (None, None) when no rule fits."""
    for reason, test in HARD_SKIP:
        if test(tokens):
            return "skip", reason
    for what, test in RUN:
        if test(tokens):
            return "run", what
    for reason, test in SKIP:
        if test(tokens):
            return "skip", reason
    return None, None


def test_readme_is_a_short_guide_with_results_near_the_top():
    raw = README.read_bytes()
    assert len(raw) <= MAX_BYTES, f"README.md is {len(raw):,} bytes; the limit is {MAX_BYTES:,}"
    lines = raw.decode().splitlines()
    assert lines[:4] == ["```bash"] + FIRST_LINES + ["```"], lines[:4]
    heading = [i for i, line in enumerate(lines, 1) if line.strip() == "## Results"]
    assert heading and heading[0] <= RESULTS_WITHIN, \
        f"'## Results' must be within the first {RESULTS_WITHIN} lines (found at {heading})"


def test_every_command_has_a_decision():
    cmds = commands()
    assert cmds, "no bash commands found in README.md"
    undecided = [" ".join(t) for _, _, t in cmds if decide(t)[0] is None]
    assert not undecided, ("README commands with no run or skip rule in tests/test_readme.py "
                           "(add one, with its reason): " + "; ".join(undecided))
    assert any(decide(t)[0] == "run" for _, _, t in cmds), "no README command is run"


def _child_env(extra):
    env = dict(os.environ)
    if not os.environ.get("VGSN_TEST_MODE"):
        env.pop("VGSN_MODE", None)          # the default back-end, as the user gets it
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in
                                        [os.environ.get("PYTHONPATH")] if p])
    env.update(extra)
    return env


def _argv(tokens):
    argv = list(tokens)
    if argv[0] == "python":
        argv[0] = sys.executable
    for i, tok in enumerate(argv[1:], 1):
        if tok.endswith(".py") and (ROOT / tok).is_file():
            argv[i] = str(ROOT / tok)          # the repository's script, from any folder
    return argv


_CMDS = commands()


@pytest.mark.parametrize("line,env,tokens", _CMDS, ids=[" ".join(t)[:80] for _, _, t in _CMDS])
def test_readme_command(line, env, tokens, tmp_path):
    kind, why = decide(tokens)
    if kind != "run":
        pytest.skip(f"README command not run: {why or 'no rule'}: {' '.join(tokens)}")
    res = subprocess.run(_argv(tokens), cwd=tmp_path, env=_child_env(env), capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert res.returncode == 0, (f"README command failed ({why}), exit {res.returncode}:\n"
                                 f"  {line}\n--- stdout\n{res.stdout[-2000:]}\n"
                                 f"--- stderr\n{res.stderr[-3000:]}")
    assert res.stdout.strip() or res.stderr.strip(), f"README command printed nothing: {line}"
