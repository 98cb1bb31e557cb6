"""A Triton Python-backend model serving the model.onnx beside it with onnxruntime.

Copied as `<model>/<version>/model.py` by `triton_export --backend python`, for a Triton without the ONNX
Runtime backend (the tritonserver in the nvidia-pytriton package ships only the Python backend). The
inputs and outputs are the ones config.pbtxt names, passed to onnxruntime and back unchanged, so the answers
are those of onnxruntime in-process. Triton's Python needs onnxruntime and numpy; when they are in another
environment, MLOPS_TRITON_PYTHONPATH (os.pathsep-separated folders) is put in front of sys.path for
onnxruntime, after numpy is imported from Triton's own Python.

This file runs inside Triton, not in the app: it imports only the standard library, numpy, onnxruntime and
Triton's triton_python_backend_utils.
"""

import json
import os
import sys

# numpy first, from Triton's own Python: the stub exchanges arrays with the numpy it was built against.
import numpy as np
import triton_python_backend_utils as pb_utils

_extra = [p for p in os.environ.get("MLOPS_TRITON_PYTHONPATH", "").split(os.pathsep) if p]
sys.path[:0] = [p for p in _extra if p not in sys.path]

import onnxruntime  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        folder = os.path.join(args["model_repository"], args["model_version"])
        options = onnxruntime.SessionOptions()
        # Triton runs one instance per configured count; each keeps to one thread, as the app's sessions do.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            os.path.join(folder, "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name: i.type for i in self.session.get_inputs()}
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            feeds = {}
            for name, onnx_type in self.inputs.items():
                values = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                if onnx_type == "tensor(string)":
                    # Triton hands BYTES tensors over as bytes objects; onnxruntime takes str.
                    values = np.vectorize(
                        lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v), otypes=[object]
                    )(values)
                feeds[name] = values
            try:
                results = self.session.run(self.outputs, feeds)
            except Exception as exc:  # onnxruntime raises its own unexported exception types
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            tensors = []
            for name, value in zip(self.outputs, results, strict=True):
                value = np.asarray(value)
                if value.dtype.kind == "U":
                    value = value.astype(object)
                tensors.append(pb_utils.Tensor(name, value))
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
