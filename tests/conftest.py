"""Shared test fixtures: isolated roots per test, the location of the real data when present."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
UFBA_DIR = SHARED / "data" / "ufba425"
FORMATS_DIR = SHARED / "formats"
LPIPS_WEIGHTS_DIR = SHARED / "weights" / "lpips"


@pytest.fixture(scope="session")
def speed_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("speed_cache")


@pytest.fixture(autouse=True)
def isolated_speed_cache(speed_cache_dir, monkeypatch):
    """Measured speeds go to a cache of the test session, never to the user's ~/.cache."""
    monkeypatch.setenv("RBMNET_CACHE", str(speed_cache_dir))


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Point the three rbmnet roots at a fresh temporary folder for one test."""
    paths = {}
    for kind, variable in (("raw", "RBMNET_RAW"), ("preprocessed", "RBMNET_PREPROCESSED"),
                           ("results", "RBMNET_RESULTS")):
        folder = tmp_path / f"rbmnet_{kind}"
        monkeypatch.setenv(variable, str(folder))
        paths[kind] = folder
    return paths


def require(path: Path) -> Path:
    """Skip the calling test when shared data is absent (CI without ../shared)."""
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny synthetic training dataset (training_factory.py), made once per test module: (root, env)."""
    from training_factory import make_tiny_dataset

    root = tmp_path_factory.mktemp("tiny")
    return root, make_tiny_dataset(root)


@pytest.fixture
def tiny_env(tiny, monkeypatch):
    """rbmnet's roots pointed at the module's tiny dataset for one test; returns its root."""
    root, env = tiny
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return root
