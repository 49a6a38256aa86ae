"""The three roots (see docs/architecture.md) and dataset lookup inside them."""
from __future__ import annotations

import os
from pathlib import Path

from rbmnet.errors import RbmnetError

ROOT_VARIABLES = {
    "raw": ("RBMNET_RAW", "rbmnet_raw"),
    "preprocessed": ("RBMNET_PREPROCESSED", "rbmnet_preprocessed"),
    "results": ("RBMNET_RESULTS", "rbmnet_results"),
}


def _root(kind: str) -> Path:
    variable, default = ROOT_VARIABLES[kind]
    return Path(os.environ.get(variable) or default).expanduser().absolute()


def raw_root() -> Path:
    return _root("raw")


def preprocessed_root() -> Path:
    return _root("preprocessed")


def results_root() -> Path:
    return _root("results")


def existing_datasets(root: Path | None = None) -> list[str]:
    root = raw_root() if root is None else root
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def resolve_dataset_name(name: str | None, root: Path | None = None) -> str:
    """Return the dataset name; None is allowed when exactly one dataset exists."""
    root = raw_root() if root is None else root
    names = existing_datasets(root)
    if name is None:
        if len(names) == 1:
            return names[0]
        if not names:
            raise RbmnetError(f"no dataset in {root}; bring one in with rbmnet_convert")
        raise RbmnetError(f"several datasets in {root} ({', '.join(names)}); choose one with -d")
    if name not in names:
        listing = ", ".join(names) if names else "none"
        raise RbmnetError(f"unknown dataset '{name}' in {root} (existing: {listing})")
    return name


def raw_dataset_dir(name: str) -> Path:
    return raw_root() / name


def preprocessed_dataset_dir(name: str) -> Path:
    return preprocessed_root() / name


def results_dataset_dir(name: str) -> Path:
    return results_root() / name
