"""The exported forward pass run by ONNX Runtime or LiteRT, without TensorFlow.

Each `*_forward` returns a function with the contract of `core.serving.inference.make_forward`'s: a
uint8 batch (N, S, S, 3) in, the four `ForwardOutputs` (probability, features, diagnoses,
pixel detail) out as numpy arrays. This module imports neither TensorFlow nor Keras, so that
`bench.runtime_probe` can measure what serving with the runtime alone would hold.
"""

import os
import re
from pathlib import Path

import numpy as np

# The exporters name the four outputs Identity, Identity_1, ... in `ForwardOutputs` order.
_OUTPUT_NUMBER = re.compile(r"Identity(?:_(\d+))?")


def _output_order(name: str) -> int:
    match = _OUTPUT_NUMBER.search(name)
    if match is None:
        raise ValueError(f"unexpected output name {name!r} in an exported forward pass")
    return int(match.group(1) or 0)


def threads() -> int:
    """The cores this process may use, the number TensorFlow's own thread pools take."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def onnx_forward(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = sorted((output.name for output in session.get_outputs()), key=_output_order)

    def forward(batch):
        return session.run(names, {input_name: batch})

    return forward


def litert_forward(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads())
    input_index = interpreter.get_input_details()[0]["index"]
    outputs = sorted(interpreter.get_output_details(), key=lambda d: _output_order(d["name"]))
    # LiteRT cannot hand out a tensor without elements: a binary model's diagnoses (N, 0).
    empty = {output["index"] for output in outputs if 0 in output["shape_signature"]}
    allocated: tuple = ()

    def forward(batch):
        nonlocal allocated
        # The interpreter's tensors have one fixed shape: reallocate when the batch size
        # changes (once per folder for its last, shorter batch).
        if batch.shape != allocated:
            interpreter.resize_tensor_input(input_index, batch.shape)
            interpreter.allocate_tensors()
            allocated = batch.shape
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        return [
            np.zeros((len(batch), 0), np.float32)
            if output["index"] in empty
            else interpreter.get_tensor(output["index"])
            for output in outputs
        ]

    return forward


FORWARDS = {"onnxruntime": onnx_forward, "litert": litert_forward}
