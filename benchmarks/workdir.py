"""What the benchmark scripts share: rbmnet's commands run in a working folder outside the repository
(radiographs are licensed clinical data: nothing derived from them may land in the project)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def work_environment(work: Path) -> dict:
    """The process environment with rbmnet's three roots inside `work`."""
    return {**os.environ, "RBMNET_RAW": str(work / "rbmnet_raw"),
            "RBMNET_PREPROCESSED": str(work / "rbmnet_preprocessed"), "RBMNET_RESULTS": str(work / "rbmnet_results")}


def rbmnet(module: str, *args: str, env: dict) -> None:
    """Run `python -m rbmnet.cli.<module> ARGS`, echoed; a failure ends the script with its exit code."""
    command = [sys.executable, "-m", f"rbmnet.cli.{module}", *args]
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    completed = subprocess.run(command, env=env)
    if completed.returncode != 0:
        raise SystemExit(f"error: {module} exited with {completed.returncode}")


def convert_once(raw_dir: Path, work: Path, dataset: str, env: dict) -> None:
    """Bring images/ and labels/ of RAW_DIR into the working folder, unless already there."""
    if not (work / "rbmnet_raw" / dataset / "dataset.json").is_file():
        rbmnet("convert", "folder", "--images", str(raw_dir / "images"), "--labels", str(raw_dir / "labels"),
               "-d", dataset, env=env)
