"""ONNX Runtime sessions for exported folds, set up for a small CPU. The onnx backend predicts through
them and rbmnet_export checks its graphs with them, so a verified export runs the way it was verified."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rbmnet.errors import RbmnetError
from rbmnet.model.forward import FoldPredictor
from rbmnet.networks.blocks import check_divisible

def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise RbmnetError("onnxruntime is not installed: pip install the onnxruntime version pyproject.toml "
                          "pins (or predict with --backend torch)") from None
    return onnxruntime


def session_options(threads: int | None = None):
    """Options for one prediction at a time on a few cores (measured in benchmarks/predict_speed.py)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    # torch's default is the number of physical cores (and it follows OMP_NUM_THREADS and
    # torch.set_num_threads): the same count keeps the two backends comparable
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # a U-Net is a chain: nothing to run in parallel
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # measured at 512 x 512 on 2 cores (default-width resunet): the arena's reuse saves ~40 % of the CPU
    # time; the memory pattern (one block planned for all activations) saves none and costs ~500 MiB at
    # batch 4 (2.3 GiB instead of 1.8), ~120 MiB at batch 1
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = False
    # idle threads sleep instead of spinning: the reader and writer threads need the same few cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # failures reach the caller as exceptions; no coloured log lines
    return options


def onnx_session(path: Path, threads: int | None = None, name: Path | None = None):
    ort = import_onnxruntime()
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types; the first line says what is wrong
        raise RbmnetError(f"{name or path}: ONNX Runtime cannot load it ({_first_line(exc)}); "
                          f"run rbmnet_export again") from None


def onnx_predictor(path: Path, size_multiple: int, architecture: str, threads: int | None = None,
                   name: Path | None = None) -> FoldPredictor:
    """The onnx backend of one fold: (B,1,H,W) float32 images -> probabilities (a CPU tensor). Errors
    name `name` (default: `path`; an export being verified is still a temporary file).

    Sizes the network cannot take fail as they do in torch (the graph itself would not always say:
    resizing skips to match makes some sizes run and give nonsense)."""
    session, name = onnx_session(path, threads, name), name or path
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name

    def predict(images: np.ndarray) -> torch.Tensor:
        check_divisible(images, size_multiple, architecture)
        try:
            (output,) = session.run([output_name], {input_name: np.ascontiguousarray(images, dtype=np.float32)})
        except Exception as exc:  # onnxruntime's Fail / InvalidArgument / RuntimeException
            raise RbmnetError(f"{name}: ONNX Runtime failed on a {'x'.join(map(str, images.shape))} input "
                              f"({_first_line(exc)})") from None
        return torch.from_numpy(output)

    return predict


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
