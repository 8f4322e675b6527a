"""tspo-edge: TSPO keyframe selection for question answering over long videos."""

import os as _os

__version__ = "0.1.0"

# The repository keeps index/, train/, export/ and cli.py at its top; a wheel installs them inside
# this package (pyproject.toml's package-dir, setup.py for cli.py). Run from a source tree (a
# checkout on PYTHONPATH, `pip install -e .`) this package has no cli.py of its own: its submodules
# are then looked up in the folder above as well, after this one, so `tspo_edge.index` and
# `tspo_edge.cli` are those same files, without links in the repository.
_top = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isfile(_os.path.join(__path__[0], "cli.py")) and all(
        _os.path.isfile(_os.path.join(_top, name)) for name in ("cli.py", "pyproject.toml")):
    __path__.append(_top)
del _os, _top
