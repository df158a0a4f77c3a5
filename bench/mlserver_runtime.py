"""A minimal MLServer runtime for the same ONNX model (the serving benchmark's peer).

mlserver-onnx is not published for current MLServer, so this 20-line custom runtime does what
it would: ONNX Runtime on the V2 inference protocol. Used only by bench/serve.py.
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxDigits(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.settings.parameters.uri, sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32).reshape(-1, 28, 28)
        if x.max() > 1.0:
            x = x / 255.0
        probs = self.session.run(None, {"image": x})[0]
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("probs", probs)])
