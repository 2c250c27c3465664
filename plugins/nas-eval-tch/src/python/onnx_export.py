"""Export a trained TorchScript module to ONNX and check the file (a sandboxed child of eval.tch-one-epoch).

Usage: python onnx_export.py REQUEST.json

Loads the trained module (eval mode), exports it with torch.onnx (the
TorchScript-based exporter, a dynamic batch dimension), checks the file with
onnx.checker, runs it with onnxruntime when installed and compares its
outputs with the module's on the same inputs (batches of 1 and 4). Writes
one JSON line on descriptor 3:

  {"ok": true, "checked_with": "onnxruntime"|"onnx.checker", "max_abs_diff": ..., "opset": ...}
  {"ok": false, "error": ...}
"""

import json
import os
import sys
import warnings

REQUEST = json.load(open(sys.argv[1]))
OPSET = 17


def write(obj):
    os.write(3, (json.dumps(obj) + "\n").encode())


def main():
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(max(1, int(REQUEST.get("threads", 1))))
    path = REQUEST["onnx_path"]
    model = torch.jit.load(REQUEST["model_path"], map_location="cpu").eval()
    c, h, w = REQUEST["in_shape"]
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(n, c, h, w, generator=gen) for n in (4, 1)]
    torch.onnx.export(
        model,
        (inputs[0],),
        path,
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    import onnx

    onnx.checker.check_model(onnx.load(path))
    try:
        import onnxruntime
    except ImportError:
        write({"ok": True, "checked_with": "onnx.checker", "max_abs_diff": None, "opset": OPSET})
        return
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = model(x).float()
        got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0]).float()
        if tuple(got.shape) != tuple(expected.shape):
            write({"ok": False, "error": f"onnxruntime answered shape {list(got.shape)} for {list(expected.shape)}"})
            return
        diff = float((got - expected).abs().max())
        tolerance = 1e-3 * max(1.0, float(expected.abs().max()))
        if not diff <= tolerance:
            write({"ok": False, "error": f"onnxruntime's outputs differ from the module's by {diff:.3g} (tolerance {tolerance:.3g})"})
            return
        worst = max(worst, diff)
    write({"ok": True, "checked_with": "onnxruntime", "max_abs_diff": worst, "opset": OPSET})


try:
    main()
except BaseException as e:  # noqa: BLE001 - any error is the export's, reported as such
    write({"ok": False, "error": f"{type(e).__name__}: {str(e).strip()[:1500]}"})
