"""ONNX helpers shared by training, the gate, the scenario and serving: the I/O contract, the one
ONNX Runtime session wrapper (``OnnxModel``), size and FLOPs.

NumPy at import; ``onnx`` and ``onnxruntime`` inside the functions that use them, so the serving
environment (onnxruntime, no onnx) can import it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT_NAME = "image"
OUTPUT_NAME = "probs"


def normalise_io(path: Path) -> None:
    """Rename the graph's single input to ``image`` and output to ``probs`` (in place).

    Keras names its output after the serving signature (``output_0``/``Identity:0``), torch
    after the argument; the server should not care which framework trained the model.
    """
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ValueError(f"{path}: expected one input and one output, got {len(inputs)} and {len(g.output)}")
    renames = {inputs[0].name: INPUT_NAME, g.output[0].name: OUTPUT_NAME}
    renames = {k: v for k, v in renames.items() if k != v}
    if not renames:
        return
    for node in g.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.name in renames:
            vi.name = renames[vi.name]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


class OnnxModel:
    """An ONNX Runtime session on the CPU with the project's I/O contract: uint8 images are scaled
    to [0, 1]; ``predict`` returns the probabilities, in batches of ``batch``."""

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(self, images: np.ndarray, batch: int = 1024) -> np.ndarray:
        x = np.asarray(images)
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
        return np.concatenate([self.session.run(None, {self.input: x[i : i + batch]})[0]
                               for i in range(0, len(x), batch)])

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float((self.predict(images).argmax(1) == labels).mean())


def param_count(path: Path) -> int:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    total = 0
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind == "f":
            total += int(arr.size)
    return total


def macs_per_image(path: Path) -> int:
    """Multiply-accumulates for one image: convolutions, matrix products and Gemm."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    # Fix the batch to 1 so every inferred shape is concrete.
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if w and out and all(out):
                group = next((a.i for a in node.attribute if a.name == "group"), 1)
                total += int(np.prod(out)) * int(np.prod(w[1:])) * (1 if group else 1)
        elif node.op_type in ("MatMul", "Gemm"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            out = shapes.get(node.output[0])
            if a and b and out and all(out):
                k = a[-1] if node.op_type == "MatMul" or not _attr(node, "transA") else a[-2]
                total += int(np.prod(out)) * int(k)
    return total


def _attr(node, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)
