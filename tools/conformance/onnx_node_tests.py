#!/usr/bin/env python3
"""Writes the ONNX backend node tests of the pinned `onnx` package to a folder, in the layout the
ONNX backend test runners read: <case>/model.onnx and <case>/test_data_set_<k>/{input,output}_<i>.pb,
plus manifest.json (per case: the op types of its graph, the tolerances the suite states).

The cases come from `onnx.backend.test.case.node.collect_testcases`, the code the `onnx` package
generates its own test data from (1,884 cases in onnx 1.23.1). Nothing here computes a reference:
every expected output is the suite's own.

Usage:  python tools/conformance/onnx_node_tests.py OUT_DIR
Needs:  onnx==1.23.1, numpy (tools/conformance/requirements.txt)
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

warnings.filterwarnings("ignore")


def tensor_proto(value, name):
    """A TensorProto of a numpy array (or the suite's own TensorProto), or None for sequences,
    optionals and maps."""
    if isinstance(value, onnx.TensorProto):
        return value
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return numpy_helper.from_array(np.asarray(value), name)
    return None


def ops_of(graph, out):
    for n in graph.node:
        out.add(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                ops_of(a.g, out)
            for g in a.graphs:
                ops_of(g, out)
    return out


def main():
    out_dir = Path(sys.argv[1])
    from onnx.backend.test.case.node import collect_testcases

    cases = collect_testcases(None)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"onnx": onnx.__version__, "cases": []}
    for case in cases:
        if case.kind != "node" or case.model is None:
            continue
        entry = {
            "name": case.name,
            "ops": sorted(ops_of(case.model.graph, set())),
            "opset": max((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), default=0),
            "rtol": float(case.rtol),
            "atol": float(case.atol),
            "inputs": [i.name for i in case.model.graph.input],
            "outputs": [o.name for o in case.model.graph.output],
        }
        d = out_dir / case.name
        d.mkdir(exist_ok=True)
        onnx.save(case.model, str(d / "model.onnx"))
        readable = True
        for k, (inputs, outputs) in enumerate(case.data_sets or []):
            s = d / f"test_data_set_{k}"
            s.mkdir(exist_ok=True)
            for kind, names, values in (("input", entry["inputs"], inputs), ("output", entry["outputs"], outputs)):
                for i, v in enumerate(values):
                    t = tensor_proto(v, names[i] if i < len(names) else f"{kind}_{i}")
                    if t is None:
                        readable = False
                        continue
                    (s / f"{kind}_{i}.pb").write_bytes(t.SerializeToString())
        entry["tensors_only"] = readable
        entry["data_sets"] = len(case.data_sets or [])
        manifest["cases"].append(entry)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(manifest['cases'])} node test cases of onnx {onnx.__version__} to {out_dir}")


if __name__ == "__main__":
    main()
