"""Settings from text: a command-line value into a field's type, changes onto a preset.

``parse_value(name, text)`` reads ``--set name=text``; ``apply_overrides(preset, changes)``
returns the preset with typed changes. Plain data: no symbolic library.
"""
import math
from dataclasses import replace

from vgsn.run.settings import DEFAULTS, FIELD_TYPES, KIND_WORDS, RENAMED

__all__ = ["parse_value", "apply_overrides"]


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
