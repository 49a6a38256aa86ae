"""The training log: one JSON line per epoch, mirrored in the checkpoint, plotted to progress.png."""
from __future__ import annotations

import json
from pathlib import Path

from rbmnet.io.atomic import atomic_path, write_text
from rbmnet.layout import PROGRESS_PNG, TRAINING_LOG


class TrainingLog:
    def __init__(self, folder: Path, entries: list[dict] | None = None):
        self.folder = Path(folder)
        self.entries: list[dict] = list(entries or [])

    @classmethod
    def read(cls, folder: Path) -> "TrainingLog":
        """The log a run wrote into `folder` (empty when it wrote none)."""
        path = Path(folder) / TRAINING_LOG
        lines = path.read_text().splitlines() if path.is_file() else []
        return cls(folder, [json.loads(line) for line in lines if line.strip()])

    def append(self, entry: dict) -> None:
        self.entries.append(entry)
        self.write()

    def write(self) -> None:
        # the whole file is rewritten atomically: after a resume it holds exactly the checkpoint's epochs
        text = "".join(json.dumps(e) + "\n" for e in self.entries)
        write_text(self.folder / TRAINING_LOG, text)

    def plot(self, curves: list[str], title: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [e["epoch"] for e in self.entries]
        fig, axis = plt.subplots(figsize=(7, 4))
        for key in curves:
            values = [e.get(key) for e in self.entries]
            if any(v is not None for v in values):
                axis.plot(epochs, [float("nan") if v is None else v for v in values], label=key)
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
        fig.tight_layout()
        with atomic_path(self.folder / PROGRESS_PNG) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
