"""Where a run came from: ``provenance.json`` in the run folder.

It records, for the start and for every resume, the exact command line (``argv`` and
the working folder), the settings that differ from the preset (``changed``), vgsn's
version and git commit (with a dirty flag, or why there is none), the versions of the
libraries that shape the numbers, Python and the device. ``report.md`` shows the
start and the last resume (:func:`report_lines`). Plain data: the device line comes
from the caller (``vgsn.backend.describe()``).
"""
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path

__all__ = ["FILE", "git_state", "library_versions", "changed_from_preset", "entry", "record",
           "report_lines"]

FILE = "provenance.json"

#: The distributions whose versions a run records (those installed).
LIBRARIES = ("vgsn", "numpy", "scipy", "aesara", "pytensor", "jax", "jaxlib", "numba", "h5py",
             "matplotlib", "tensorboardX", "submitit")

ROOT = Path(__file__).resolve().parents[2]   # the checkout vgsn runs from, if it is one


def git_state(root=ROOT):
    """{'commit', 'dirty'} of the git checkout holding vgsn, or {'commit': None,
    'why': ...} when there is none (an installed copy, no git)."""
    if not (Path(root) / ".git").exists():
        return {"commit": None, "dirty": None, "why": f"{root} is not a git checkout"}
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"commit": None, "dirty": None, "why": f"git did not answer ({exc})"}
    if head.returncode:
        return {"commit": None, "dirty": None,
                "why": f"git rev-parse failed: {head.stderr.strip()[:200]}"}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def library_versions():
    """{distribution: version} of :data:`LIBRARIES` that are installed."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "vgsn" not in out:
        from vgsn import __version__
        out["vgsn"] = __version__
    return out


def changed_from_preset(config, presets):
    """{field: 'preset value -> run value'} of the fields where ``config`` differs from
    the preset it is named after (``presets``: name -> Preset); {} for a custom one."""
    base = presets.get(config.name)
    if base is None:
        return {}
    a, b = base.to_dict(), config.to_dict()
    return {k: f"{a[k]!r} -> {b[k]!r}" for k in b if a.get(k) != b[k]}


def entry(argv, device, changed=None, update=0, what="start", extra=None):
    """One record: the command (``argv`` as given, ``argv[0]`` the program), what changed
    from the preset, the code's version and the machine."""
    from vgsn import __version__
    argv = [str(a) for a in argv]
    return {"what": what, "at": datetime.now().isoformat(timespec="seconds"),
            "update": int(update), "command": shlex.join(argv), "argv": argv,
            "cwd": os.getcwd(), "python_executable": sys.executable,
            "changed": changed or {}, "vgsn": __version__,
            "git": git_state(), "python": sys.version.split()[0],
            "libraries": library_versions(), "device": device,
            "host": platform.node(), **(extra or {})}


def record(out, item):
    """Append ``item`` to the run folder's ``provenance.json`` (written whole, then
    renamed into place, so a kill leaves the old file or the new one)."""
    path = Path(out) / FILE
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            data = [data]
    except (OSError, ValueError):
        data = []
    data.append(item)
    tmp = path.with_name(f".{FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def _git_words(git):
    if not git or git.get("commit") is None:
        return f"no git commit ({(git or {}).get('why', 'not recorded')})"
    return f"git {git['commit'][:12]}{' (dirty: uncommitted changes)' if git['dirty'] else ''}"


def report_lines(out):
    """``report.md``'s "Provenance" section from ``provenance.json`` (none: no lines)."""
    try:
        items = json.loads((Path(out) / FILE).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(items, list) or not items:
        return []
    lines = ["## Provenance", ""]
    for item in items:
        libs = ", ".join(f"{k} {v}" for k, v in item.get("libraries", {}).items() if k != "vgsn")
        head = "started" if item.get("what") == "start" else \
            f"{item.get('what', 'resumed')} at update {item.get('update', 0):,}"
        lines += [f"- {head} {item.get('at', '')}: `{item.get('command', '')}` (in "
                  f"`{item.get('cwd', '')}`)",
                  f"  - vgsn {item.get('vgsn', '?')}, {_git_words(item.get('git'))}; Python "
                  f"{item.get('python', '?')}; {libs}",
                  f"  - device: {item.get('device', '?')} on {item.get('host', '?')}"]
        changed = item.get("changed") or {}
        if changed:
            lines.append("  - changed from the preset: " + ", ".join(
                f"{k} {v}" for k, v in changed.items()))
    return lines + ["", f"All of it: `{FILE}`.", ""]
