"""The package's layout: folders that show the architecture, imports flowing one way.

Read from the source files (``ast``), so nothing here imports the symbolic library.
"""
import ast
import re
import subprocess
import sys

from _paths import ROOT

PKG = ROOT / "vgsn"
SUBPACKAGES = ("model", "data", "eval", "compat2015", "run", "studies")
# What each part may import (besides itself and vgsn.backend); top imports bottom.
ALLOWED = {
    "model": set(),
    "data": set(),
    "eval": {"model", "data"},
    "compat2015": {"model", "data"},
    "run": {"model", "data", "eval", "compat2015"},
    "studies": {"run", "model", "data", "eval", "compat2015"},
}


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _part(path):
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else None      # None: a top-level module


def _vgsn_imports(path):
    """Every vgsn module a file imports (absolute names), anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vgsn"):
            if node.module == "vgsn":
                found.update(f"vgsn.{a.name}" for a in node.names)
            else:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vgsn"))
    return found


def test_folders_and_sizes():
    subs = [d.name for d in PKG.iterdir() if (d / "__init__.py").is_file()]
    assert set(SUBPACKAGES) <= set(subs) and len(subs) >= 4
    top = [p.name for p in PKG.glob("*.py")]
    assert len(top) <= 6, top
    assert not (PKG / "graphcache.py").exists()
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


def test_imports_flow_one_way():
    wrong = []
    for path in _modules():
        part = _part(path)
        if part is None:
            continue
        for name in _vgsn_imports(path):
            parts = name.split(".")
            if len(parts) < 2 or parts[1] in ("backend", "__version__") or parts[1] == part:
                continue
            target = parts[1]
            if target in SUBPACKAGES and target not in ALLOWED[part]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_nothing_below_run_prints():
    printing = []
    for path in _modules():
        if _part(path) not in ("model", "data", "eval", "compat2015") or path.name == "compare.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                printing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not printing, printing


def test_no_history_in_the_package():
    pattern = re.compile(r"\bissues? #?\d+|\b20[12]\d-[01]\d-[0-3]\d\b|\b2-core\b|this machine\b"
                         r"|this project's")
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _modules()
            for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line) and "pylearn2 issue" not in line]
    assert not hits, "\n".join(hits)


def test_public_names_without_the_symbolic_library():
    code = ("import sys, vgsn; names = vgsn.__all__; "
            "assert 'OneStageModel' in names and 'load_models' in names; "
            "assert not any(m in sys.modules for m in ('aesara', 'pytensor', 'vgsn.backend')); "
            "vgsn.load_dataset; assert 'vgsn.backend' not in sys.modules; "
            "vgsn.OneStageModel, vgsn.VCGLoop, vgsn.load_2015_model; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
