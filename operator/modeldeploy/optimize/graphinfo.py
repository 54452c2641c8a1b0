"""Read facts back from an exported SavedModel on disk: serving op types, kernel availability, weight sparsity.

Measuring on the files (not on the in-memory model) is the point: it proves what was published, e.g. that
pruned zeros survived quantization.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from modeldeploy.optimize import export
from modeldeploy.optimize.weights import weight_constants


def read_saved_model(path: str) -> saved_model_pb2.SavedModel:
    """Parse `<path>/saved_model.pb`."""
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as fh:
        sm.ParseFromString(fh.read())
    return sm


def _functions_called(node) -> list[str]:
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names


def serving_nodes(path: str, signature: str = "serving_default") -> list:
    """Every NodeDef the serving signature executes: graph nodes it reaches plus called function bodies."""
    sm = read_saved_model(path)
    mg = sm.meta_graphs[0]
    graph = {n.name: n for n in mg.graph_def.node}
    library = {f.signature.name: f for f in mg.graph_def.library.function}
    sig = mg.signature_def[signature]
    todo = [t.name.split(":")[0] for t in sig.outputs.values()]
    seen, seen_fns, out = set(), set(), []
    while todo:  # walk graph inputs backwards from the signature outputs
        name = todo.pop()
        if name in seen or name not in graph:
            continue
        seen.add(name)
        node = graph[name]
        out.append(node)
        todo.extend(i.lstrip("^").split(":")[0] for i in node.input)
        fn_todo = _functions_called(node)
        while fn_todo:  # and into every function body those nodes call
            fname = fn_todo.pop()
            if fname in seen_fns or fname not in library:
                continue
            seen_fns.add(fname)
            for fnode in library[fname].node_def:
                out.append(fnode)
                fn_todo.extend(_functions_called(fnode))
    return out


def must_compile(path: str) -> list[str]:
    """Functions and nodes of a SavedModel on disk with `_XlaMustCompile=true` (empty: runs without XLA)."""
    return sorted(label for mg in read_saved_model(path).meta_graphs for label in export.must_compile(mg.graph_def))


def serving_op_types(path: str) -> set[str]:
    """Op type names the serving signature runs."""
    return {n.op for n in serving_nodes(path)}


def missing_kernels(path: str, device: str) -> list[str]:
    """Serving ops (with their dtype attributes) that have no kernel registered for `device` ("CPU"/"GPU").

    Checks the kernel registry of the TensorFlow in this process, including each kernel's type constraints,
    so a GPU Cast that exists only for other dtypes counts as missing. Empty list: every op can run there.
    """
    from tensorflow.python.framework import kernels

    missing, cache = [], {}
    for node in serving_nodes(path):
        if node.op in ("Placeholder", "NoOp", "_Arg", "_Retval"):
            continue  # graph plumbing, not kernels
        if node.op not in cache:
            cache[node.op] = [k for k in kernels.get_registered_kernels_for_op(node.op).kernel
                              if k.device_type in (device, "DEFAULT")]  # DEFAULT: any device
        if not any(kernel_fits(k, node) for k in cache[node.op]):
            types = {a: tf.as_dtype(v.type).name for a, v in node.attr.items() if v.type}
            missing.append(f"{node.op}{types or ''}")
    return sorted(set(missing))


def kernel_fits(kernel, node) -> bool:
    """Whether a registered KernelDef's type constraints admit the node's type attributes."""
    for constraint in kernel.constraint:
        allowed = list(constraint.allowed_values.list.type)
        value = node.attr[constraint.name] if constraint.name in node.attr else None
        if value is None or not allowed:
            continue
        if value.type and value.type not in allowed:
            return False
        if value.list.type and any(t not in allowed for t in value.list.type):
            return False
    return True


def weight_sparsity(path: str) -> tuple[float, int, int]:
    """(fraction of zeros, zeros, elements) over the stored weight tensors (matmul/conv kernels) of a
    SavedModel exported by `export.save`, whatever their stored dtype (float32, float16 or int8)."""
    from tensorflow.core.framework import graph_pb2

    mg = read_saved_model(path).meta_graphs[0]
    bodies = [list(mg.graph_def.node)] + [list(f.node_def) for f in mg.graph_def.library.function]
    zeros = total = 0
    for body in bodies:  # one scope at a time: node names are unique only within a function
        gd = graph_pb2.GraphDef()
        gd.node.extend(body)
        consts = {n.name: n for n in body}
        for name in weight_constants(gd):
            arr = tf.make_ndarray(consts[name].attr["value"].tensor)
            zeros += int(np.count_nonzero(arr == 0))
            total += int(arr.size)
    return (zeros / total if total else 0.0), zeros, total


def stored_weight_dtypes(path: str) -> set[str]:
    """dtype names of the stored weight tensors (e.g. {"int8"}): proves what the files hold."""
    from tensorflow.core.framework import graph_pb2

    mg = read_saved_model(path).meta_graphs[0]
    out = set()
    for body in [list(mg.graph_def.node)] + [list(f.node_def) for f in mg.graph_def.library.function]:
        gd = graph_pb2.GraphDef()
        gd.node.extend(body)
        consts = {n.name: n for n in body}
        out.update(tf.as_dtype(consts[name].attr["dtype"].type).name for name in weight_constants(gd))
    return out
