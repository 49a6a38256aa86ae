"""One fold's ProbabilityNetwork (model/forward.py) traced into an ONNX file with dynamic batch, height and width.

The exporter is torch.onnx.export's torch.export-based one (dynamo=True, which needs onnxscript): in
torch 2.13 it is the default and the maintained path, while the TorchScript exporter is deprecated and
traces Python shape checks (the networks' size check, the Sobel kernel) as constants of the example.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch

from rbmnet.errors import RbmnetError
from rbmnet.model.exported import INPUT_NAME, OUTPUT_NAME
from rbmnet.model.forward import ProbabilityNetwork

OPSET = 20  # ONNX opset written into the graph (onnxruntime 1.32 runs up to 23)


def export_graph(model: ProbabilityNetwork, input_size: list[int], path: Path) -> None:
    """Write `model` as ONNX to `path`: input `images` (batch, 1, height, width) float32, output
    `probabilities` (batch, C, height, width), weights inside the one file."""
    _require_exporter()
    # batch 2: torch.export takes an example dimension of size 1 as fixed
    example = torch.rand(2, 1, *input_size)
    dynamic = torch.export.Dim.DYNAMIC
    shapes = {"images": {0: torch.export.Dim("batch", min=1), 2: dynamic, 3: dynamic}}
    # the exporter prints its progress and warns about its own internals; keep the command's output to ours
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model.eval(), (example,), str(path), dynamo=True, dynamic_shapes=shapes,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET,
                              external_data=False, verbose=False)
        except Exception as exc:  # torch.export reports unsupported code with its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise RbmnetError(f"torch.onnx.export failed ({first})") from None


def _require_exporter() -> None:
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise RbmnetError(f"{module} is not installed; rbmnet_export needs onnx and onnxscript "
                              f"(pip install the versions pyproject.toml pins)") from None
