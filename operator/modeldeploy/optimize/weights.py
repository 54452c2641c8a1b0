"""Store a frozen graph's weights as float16 or int8 inside the graph itself (export.py freezes and saves it).

Every weight constant feeding a MatMul / Conv2D / DepthwiseConv2dNative / Conv3D, or an embedding table feeding a
GatherV2 (through Identity or fake-quant ops) is replaced by a smaller constant plus dequantizing ops under the
original node name:
- float16: `Cast(Const half)`;
- int8: `Mul(Cast(Const int8), Const scale)`, symmetric per output channel, 127 levels each side, zero point 0 --
  so pruned zeros stay exact int8 zeros, which gzip compresses.
Cast, Mul and the consumers have CPU and GPU kernels in stock TensorFlow. The dequantization runs with each
call (a Cast and a Mul over the weights), so serving speed stays close to float32 -- the benchmark measures it
-- while the files on disk and the download are 2x / 4x smaller.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2

from modeldeploy.optimize.export import all_nodes, producer

# Consumers whose weight input (index) we compress, and the axes that index one output channel.
WEIGHT_CONSUMERS = {
    "MatMul": 1, "Conv2D": 1, "DepthwiseConv2dNative": 1, "Conv3D": 1, "Conv2DBackpropInput": 1,
    "GatherV2": 0,   # embedding tables (params); one scale per embedding column
}
# Ops between a weight constant and its consumer that we look through.
PASS_THROUGH = ("Identity", "FakeQuantWithMinMaxVars", "FakeQuantWithMinMaxVarsPerChannel",
                "FakeQuantWithMinMaxArgs", "Mul", "Cast", "ReadVariableOp")
STORAGE = ("float32", "float16", "int8")
SCALE_SUFFIX = "/md_scale"
WEIGHT_DTYPES = (tf.float32.as_datatype_enum, tf.float16.as_datatype_enum, tf.int8.as_datatype_enum)


def weight_constants(graph_def: graph_pb2.GraphDef) -> dict[str, tuple[str, bool]]:
    """Weight Const node names -> (consumer op type, transpose_b), found by walking back from consumers.

    The walk looks through Identity/Cast/fake-quant ops (first input) and Mul (both inputs: prune-preserving
    QAT multiplies the kernel by a float32 mask of the same shape, which is weight data too), but never into
    the per-channel scales this module writes.
    """
    nodes = {n.name: n for n in all_nodes(graph_def)}
    found = {}
    for node in list(nodes.values()):
        index = WEIGHT_CONSUMERS.get(node.op)
        if index is None or len(node.input) <= index:
            continue
        todo, steps = [producer(node.input[index])], 0
        while todo and steps < 16:  # bounded: odd graphs cannot make this loop
            steps += 1
            src = nodes.get(todo.pop())
            if src is None or src.name.endswith(SCALE_SUFFIX):
                continue
            if src.op == "Const":
                if src.attr["dtype"].type in WEIGHT_DTYPES:
                    found[src.name] = (node.op, bool(node.attr["transpose_b"].b) if node.op == "MatMul" else False)
                continue
            if src.op not in PASS_THROUGH or not src.input:
                continue
            inputs = [i for i in src.input if not i.startswith("^")]
            todo.extend(producer(i) for i in (inputs[:2] if src.op == "Mul" else inputs[:1]))
    return found


def _channel_axes(consumer: str, transpose_b: bool, ndim: int) -> tuple[int, ...]:
    """Axes that identify one output channel (kept) when computing per-channel scales."""
    if consumer == "MatMul":
        return (0,) if transpose_b else (ndim - 1,)
    if consumer == "DepthwiseConv2dNative":
        return (ndim - 2, ndim - 1)   # [h, w, in_channels, multiplier]: one scale per output channel
    if consumer == "Conv2DBackpropInput":
        return (ndim - 2,)            # [h, w, out, in]
    return (ndim - 1,)                # Conv2D/Conv3D: [..., in, out]


def quantize_int8(w: np.ndarray, keep_axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8: returns (q int8, scale float32 broadcastable to w). 0.0 maps to 0 exactly."""
    reduce_axes = tuple(a for a in range(w.ndim) if a not in keep_axes)
    max_abs = np.max(np.abs(w), axis=reduce_axes, keepdims=True) if reduce_axes else np.abs(w)
    scale = np.where(max_abs > 0, max_abs / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, scale


def const_node(name: str, array: np.ndarray) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = tf.as_dtype(array.dtype).as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array))
    return node


def cast_node(name: str, src: str, src_dtype, dst_dtype=tf.float32) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op="Cast", input=[src])
    node.attr["SrcT"].type = tf.as_dtype(src_dtype).as_datatype_enum
    node.attr["DstT"].type = tf.as_dtype(dst_dtype).as_datatype_enum
    node.attr["Truncate"].b = False
    return node


def compress_weights(graph_def: graph_pb2.GraphDef, storage: str) -> graph_pb2.GraphDef:
    """A copy of a frozen graph with every float32 weight constant stored as `storage` (see module doc)."""
    if storage not in STORAGE:
        raise ValueError(f"storage must be one of {STORAGE}")
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    if storage == "float32":
        return out
    _fold_constant_muls(out)
    weights = weight_constants(out)
    # Weights live in the top-level graph after freezing; rewrite there (function bodies are left as they are).
    new_nodes = []
    for node in out.node:
        if node.name not in weights or node.attr["dtype"].type != tf.float32.as_datatype_enum:
            new_nodes.append(node)
            continue
        w = tf.make_ndarray(node.attr["value"].tensor)
        device = node.device
        if storage == "float16":
            stored = const_node(node.name + "/md_f16", w.astype(np.float16))
            replaced = [stored, cast_node(node.name, stored.name, tf.float16)]
        else:
            consumer, transpose_b = weights[node.name]
            q, scale = quantize_int8(w, _channel_axes(consumer, transpose_b, w.ndim))
            stored, scale_node = const_node(node.name + "/md_q", q), const_node(node.name + SCALE_SUFFIX, scale)
            cast = cast_node(node.name + "/md_dequant", stored.name, tf.int8)
            mul = node_def_pb2.NodeDef(name=node.name, op="Mul", input=[cast.name, scale_node.name])
            mul.attr["T"].type = tf.float32.as_datatype_enum
            replaced = [stored, scale_node, cast, mul]
        for r in replaced:
            r.device = device
        new_nodes.extend(replaced)
    del out.node[:]
    out.node.extend(new_nodes)
    return out


def _fold_constant_muls(graph_def: graph_pb2.GraphDef) -> None:
    """Replace Mul(Const, Const) of float32 weights (through Identity) by one Const, in place, and drop the
    nodes that fed only it.

    Prune-preserving QAT multiplies each kernel by a 0/1 mask of the same shape; the kernel already holds the
    zeros, so storing the mask too would double the weight data of the published model.
    """
    nodes = {n.name: n for n in graph_def.node}
    uses: dict[str, int] = {}  # data uses only: control edges to a dropped node are removed below
    for n in graph_def.node:
        for i in n.input:
            if not i.startswith("^"):
                uses[producer(i)] = uses.get(producer(i), 0) + 1

    def const_of(name):
        for _ in range(4):
            node = nodes.get(name)
            if node is None or node.op != "Identity":
                return node if node is not None and node.op == "Const" else None
            name = producer(node.input[0])
        return None

    dropped = set()

    def release(name):  # one fewer use; a node nobody uses any more goes, and so may its inputs
        uses[name] -= 1
        if uses[name] == 0 and nodes[name].op in ("Const", "Identity"):
            dropped.add(name)
            for i in nodes[name].input:
                if not i.startswith("^"):
                    release(producer(i))

    for n in list(graph_def.node):
        if n.op != "Mul" or len(n.input) != 2:
            continue
        srcs = [const_of(producer(i)) for i in n.input]
        if any(c is None or c.attr["dtype"].type != tf.float32.as_datatype_enum for c in srcs):
            continue
        a, b = (tf.make_ndarray(c.attr["value"].tensor) for c in srcs)
        if a.shape != b.shape or a.size < 2:
            continue
        inputs = [producer(i) for i in n.input]
        folded = const_node(n.name, (a * b).astype(np.float32))
        folded.device = n.device
        n.CopyFrom(folded)
        for name in inputs:
            release(name)
    if dropped:
        kept = [n for n in graph_def.node if n.name not in dropped]
        for n in kept:
            if any(i.startswith("^") and i[1:] in dropped for i in n.input):
                inputs = [i for i in n.input if not (i.startswith("^") and i[1:] in dropped)]
                del n.input[:]
                n.input.extend(inputs)
        del graph_def.node[:]
        graph_def.node.extend(kept)
