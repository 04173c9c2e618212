"""Saving and loading networks: vgsn's own checkpoints and the 2015 author code's files.

=============================  ===================================================
2015 author-code files         ``vgsn.orig2015`` (re-exported here): read the
                               pickles the 2015 Theano code saved (InfNet q / p,
                               PeaNet guide) into vgsn's nets, and write vgsn's
                               parameters in the same layout.
=============================  ===================================================
"""

# ---------------------------------------------------------------------------
# 2015 author-code files (implemented in vgsn/orig2015.py)
# ---------------------------------------------------------------------------
from vgsn.orig2015 import (  # noqa: F401
    Function2015, InfNetFile, Orig2015Error, PeaNetFile, export_2015_guide, export_2015_infnet,
    export_2015_model, load_2015_guide, load_2015_model, read_2015_infnet, read_2015_peanet,
    set_guide_from_2015, set_infnet_from_2015)

__all__ = [
    "Function2015", "InfNetFile", "Orig2015Error", "PeaNetFile", "export_2015_guide",
    "export_2015_infnet", "export_2015_model", "load_2015_guide", "load_2015_model",
    "read_2015_infnet", "read_2015_peanet", "set_guide_from_2015", "set_infnet_from_2015",
]
