"""Settings from text: a command-line value into a field's type, changes onto a preset,
settings files in and out.

``parse_value(name, text)`` reads ``--set name=text``; ``apply_overrides(preset, changes)``
returns the preset with typed changes; ``dump_settings(preset)`` is the YAML that
``--print-config`` prints and ``read_settings(path)`` reads back (``--config FILE``);
``parse_seeds`` is the one meaning of ``--seeds`` (a list: ``1 2 3``, ``1-3``, ``1,2``).
Plain data: no symbolic library.
"""
import math
import re
from dataclasses import replace
from pathlib import Path

from vgsn.run.settings import DEFAULTS, FIELD_TYPES, KIND_WORDS, RENAMED, RETIRED, check_type

__all__ = ["parse_value", "apply_overrides", "dump_settings", "read_yaml", "settings_from_mapping",
           "read_settings", "parse_seeds"]


def _unknown(name):
    """The one-line message for a setting that is not a field (renamed ones say so)."""
    renamed = f" (renamed: {', '.join(RENAMED[name])})" if name in RENAMED else ""
    return f"unknown setting {name!r}{renamed}; known: {', '.join(FIELD_TYPES)}"


def parse_value(name, text):
    """Parse a command-line string for field ``name`` into the field's type.

    ``none`` gives None (for the optional fields); tuples are comma-separated
    ('1000,1000'); booleans accept true/false/1/0/yes/no.
    Raises ``ValueError`` with a one-line message.
    """
    if name not in FIELD_TYPES:
        raise ValueError(_unknown(name))
    kind, default = FIELD_TYPES[name], DEFAULTS[name]
    text = str(text).strip()
    if text.lower() == "none":
        if default is None:
            return None
        raise ValueError(f"{name} must be {KIND_WORDS.get(kind, kind)}, got {text!r} (only "
                         f"optional settings take none)")
    try:
        if kind is tuple or isinstance(default, tuple):
            return tuple(int(v) for v in text.split(",") if v.strip())
        if kind is bool:
            low = text.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return low in ("true", "1", "yes")
        if kind is int:
            try:
                return int(text)          # exact, however large (validate bounds it)
            except ValueError:
                value = float(text)       # 1e4
            if not math.isfinite(value) or value != int(value):
                raise ValueError(text)
            return int(value)
        if kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {text!r}")
            return value
        return text
    except ValueError:
        word = "a finite number" if kind is float else KIND_WORDS.get(kind, kind)
        raise ValueError(f"{name} must be {word}, got {text!r}") from None


def apply_overrides(preset, changes):
    """``preset`` with the fields in ``changes`` (name -> typed value) replaced;
    ``ValueError`` names an unknown field."""
    unknown = [name for name in changes if name not in FIELD_TYPES]
    if unknown:
        raise ValueError(_unknown(unknown[0]))
    return replace(preset, **changes)


def dump_settings(preset, header=()):
    """Every field of ``preset`` as YAML (``yaml.safe_dump``, fields in the dataclass's
    order), after ``header`` lines written as ``#`` comments; :func:`read_settings` reads
    it back to the same preset."""
    import yaml
    lines = "".join(f"# {h}\n" for h in header)
    return lines + yaml.safe_dump(preset.to_dict(), sort_keys=False, default_flow_style=None,
                                  width=1000)


def _typed(name, value):
    """A value read from a settings file in field ``name``'s type (``ValueError``)."""
    kind = FIELD_TYPES[name]
    if isinstance(value, str) and kind is not str:
        return parse_value(name, value)           # '500,500', 'none', '1e-4'
    if isinstance(value, list):
        value = tuple(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    check_type(name, value)
    return value


def read_yaml(path, flag="--config"):
    """The YAML document in ``path`` (None when empty); ``ValueError``: one line naming
    the file."""
    import yaml
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{flag} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{flag} {path}: cannot read it "
                         f"({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ValueError(f"{flag} {path}: not YAML{at}; write it as --print-config "
                         f"does (FIELD: VALUE per line)") from None


def settings_from_mapping(data, where):
    """{field: typed value} of a mapping read from a settings file (renamed fields
    load under their new names); ``ValueError`` names ``where`` and the field."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: must be a mapping of settings (FIELD: VALUE per line, as "
                         f"--print-config writes), got a {type(data).__name__}")
    out = {}
    for key, value in data.items():
        name = str(key).strip().replace("-", "_")
        if name in RETIRED and value == RETIRED[name]:
            continue
        for target in RENAMED.get(name, (name,)):
            if target not in FIELD_TYPES:
                raise ValueError(f"{where}: {_unknown(name)}")
            try:
                out[target] = _typed(target, value)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
    return out


def read_settings(path):
    """{field: typed value} of a settings file (YAML mapping, as ``--print-config``
    writes it; a subset of the fields is fine). ``ValueError``: one line naming the
    file and the field or the fix."""
    return settings_from_mapping(read_yaml(path), f"--config {path}")


def parse_seeds(items, flag="--seeds"):
    """The seeds of ``--seeds`` as a list: each item a seed (``3``), a range (``1-3``) or
    comma-separated ones (``1,2``). ``ValueError``: one line naming the value."""
    seeds = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                raise ValueError(f"{flag}: {part!r} is not a seed (whole number >= 0) or a "
                                 f"range (1-3)")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise ValueError(f"{flag}: the range {part} is empty; write it low-high")
            seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise ValueError(f"{flag}: give one or more seeds, e.g. {flag} 1 2 3 or {flag} 1-3")
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise ValueError(f"{flag}: seed {dup[0]} is given twice")
    if max(seeds) >= 2 ** 32:
        raise ValueError(f"{flag}: seeds must be below 2**32, got {max(seeds)}")
    return seeds
