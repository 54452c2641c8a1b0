"""Export a model as a SavedModel whose weights are stored float32, float16 or int8.

TFLite converters produce .tflite files, not SavedModels, and TF Serving serves SavedModels. So quantized
weights are stored inside the SavedModel graph:
1. the model's forward function is frozen (variables become constants);
2. every weight constant feeding a MatMul / Conv2D / DepthwiseConv2dNative / Conv3D, or an embedding table
   feeding a GatherV2 (through Identity or fake-quant ops) is replaced by a smaller constant plus dequantizing ops
   under the original node name:
   - float16: `Cast(Const half)`;
   - int8: `Mul(Cast(Const int8), Const scale)`, symmetric per output channel, 127 levels each side, zero
     point 0 -- so pruned zeros stay exact int8 zeros, which gzip compresses;
3. the rewritten graph is imported into a `serving_default` tf.function and saved.
XLA must-compile (`tf.function(jit_compile=True)`, `_XlaMustCompile=true` on a function or call node) is removed
while freezing: TF Serving disables XLA unless started with an XLA flag, so a published function that must be
compiled loads but fails every request; and grappler does not inline a must-compile function, so its weights
would reach their MatMul/Conv2D only through a call boundary, out of the weight rewrite's sight (nothing would
be quantized). The same ops then run as an ordinary TensorFlow graph: same signature, same numerics up to
float round-off.
Cast, Mul and the consumers have CPU and GPU kernels in stock TensorFlow. The dequantization runs with each
call (a Cast and a Mul over the weights), so serving speed stays close to float32 -- the benchmark measures it
-- while the files on disk and the download are 2x / 4x smaller.
"""
from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from modeldeploy.storage.errors import first_line

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
MUST_COMPILE = "_XlaMustCompile"
NO_INLINE = "_noinline"  # tf.function(jit_compile=True) also marks its function not-inlinable

log = logging.getLogger(__name__)


Names = dict  # serving key -> tensor name in the frozen graph


def freeze(fn, specs: list[tf.TensorSpec]) -> tuple[graph_pb2.GraphDef, Names, Names]:
    """Freeze `fn` ({input key: tensor} -> {output key: tensor}) over `specs` (each named by its key) into a
    GraphDef; returns (graph_def, input key -> tensor name, output key -> tensor name)."""
    graph_def, inputs, outputs, _ = freeze_for_serving(fn, specs)
    return graph_def, inputs, outputs


def freeze_for_serving(fn, specs: list[tf.TensorSpec]) -> tuple[graph_pb2.GraphDef, Names, Names, list[str]]:
    """`freeze`, plus the names of the functions and nodes whose XLA must-compile attribute was removed.

    A must-compile function survives the first freeze as a call (grappler does not inline it) with its weights
    passed in as arguments; once the attribute is cleared, the graph is frozen once more so the calls are
    inlined and every weight constant sits next to the op that consumes it.
    """
    graph_def, inputs, outputs = _freeze_once(fn, specs)
    removed = strip_must_compile(graph_def)
    if removed:
        try:
            graph_def, inputs, outputs = _freeze_once(imported(graph_def, inputs, outputs, "md_inline"), specs)
        except Exception as exc:  # noqa: BLE001 - the stripped graph still serves; only its weights stay float
            log.warning("could not inline the former must-compile functions (%s); their weights stay float32",
                        first_line(exc))
        left = must_compile(graph_def)
        if left:  # cannot happen unless TensorFlow re-adds it; never publish what TF Serving refuses
            raise ValueError(f"XLA must-compile is still set on {', '.join(left)} after removing it")
    return graph_def, inputs, outputs, removed


def imported(graph_def: graph_pb2.GraphDef, inputs: Names, outputs: Names, scope: str):
    """A function {input key: tensor} -> {output key: tensor} that runs a frozen graph."""
    out_keys = list(outputs)

    def fn(x: dict):
        ys = tf.graph_util.import_graph_def(graph_def, input_map={inputs[k]: x[k] for k in inputs},
                                            return_elements=[outputs[k] for k in out_keys], name=scope)
        return dict(zip(out_keys, ys))
    return fn


def _freeze_once(fn, specs: list[tf.TensorSpec]) -> tuple[graph_pb2.GraphDef, Names, Names]:
    keys = [s.name for s in specs]

    def positional(*args):
        return fn(dict(zip(keys, args)))

    concrete = tf.function(positional).get_concrete_function(*specs)
    # Functional control flow (While, If) stays functional: lowered to v1 frames, a loop (an RNN) could not be
    # imported into the serving function again.
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False)
    # The frozen function's inputs are the placeholders of `specs`, in order; its outputs follow the flattened
    # (sorted by key) structure of the returned dict.
    out_keys = sorted(concrete.structured_outputs)
    inputs = {k: t.name for k, t in zip(keys, frozen.inputs[:len(keys)])}
    outputs = {k: t.name for k, t in zip(out_keys, frozen.outputs)}
    graph_def = frozen.graph.as_graph_def()
    # Freezing turns variables into constants; any other resource (a lookup table of StringLookup or
    # TextVectorization, a hash table) is left as an unfed placeholder, and the exported model would fail
    # every request.
    fed = {_producer(n) for n in inputs.values()}
    unfed = sorted(n.name for n in _all_nodes(graph_def) if n.op == "Placeholder" and n.name not in fed
                   and n.attr["dtype"].type == tf.resource.as_datatype_enum)
    if unfed:
        raise UnfreezableModel(f"the model holds state other than variables, which a frozen graph cannot carry "
                               f"(lookup tables such as StringLookup or TextVectorization: {', '.join(unfed[:3])})")
    return graph_def, inputs, outputs


class UnfreezableModel(ValueError):
    """The model's graph cannot be frozen into constants (it holds tables or other non-variable resources)."""


def _must_compile_holders(graph_def):
    """(label, attr map, FunctionDef or None) of every function and node (top level and in function bodies)."""
    for node in graph_def.node:
        yield node.name, node.attr, None
    for fdef in graph_def.library.function:
        yield fdef.signature.name, fdef.attr, fdef
        for node in fdef.node_def:
            yield f"{fdef.signature.name}/{node.name}", node.attr, None


def must_compile(graph_def) -> list[str]:
    """Functions and nodes carrying `_XlaMustCompile=true` (what TF Serving refuses to run without XLA)."""
    return sorted(label for label, attr, _ in _must_compile_holders(graph_def)
                  if MUST_COMPILE in attr and attr[MUST_COMPILE].b)


def strip_must_compile(graph_def) -> list[str]:
    """Delete `_XlaMustCompile=true` everywhere in `graph_def` (in place), and `_noinline` from the functions
    that carried it; returns what had it, sorted.

    When anything changed, every library function is renamed (RENAMED_SUFFIX) and every reference follows:
    the originals stay registered in the TensorFlow runtime under their old names, and a second, different
    definition under the same name is refused when the graph is imported or saved.
    """
    removed = []
    for label, attr, fdef in list(_must_compile_holders(graph_def)):
        if MUST_COMPILE in attr and attr[MUST_COMPILE].b:
            removed.append(label)
            del attr[MUST_COMPILE]
            if fdef is not None and NO_INLINE in attr:
                del attr[NO_INLINE]
    if removed:
        _rename_functions(graph_def)
    return sorted(removed)


RENAMED_SUFFIX = "_md_noxla"


def _rename_functions(graph_def, suffix: str = RENAMED_SUFFIX) -> None:
    library = graph_def.library
    renamed = {f.signature.name: f.signature.name + suffix for f in library.function}
    for fdef in library.function:
        fdef.signature.name = renamed[fdef.signature.name]
    for _, attr, _ in _must_compile_holders(graph_def):
        for value in attr.values():
            if value.HasField("func") and value.func.name in renamed:
                value.func.name = renamed[value.func.name]
            for fn in value.list.func:
                if fn.name in renamed:
                    fn.name = renamed[fn.name]
    for node in _all_nodes(graph_def):
        if node.op in renamed:  # a function called directly as an op
            node.op = renamed[node.op]
    for grad in library.gradient:
        grad.function_name = renamed.get(grad.function_name, grad.function_name)
        grad.gradient_func = renamed.get(grad.gradient_func, grad.gradient_func)


def _producer(name: str) -> str:
    return name.lstrip("^").split(":")[0]


def weight_constants(graph_def: graph_pb2.GraphDef) -> dict[str, tuple[str, bool]]:
    """Weight Const node names -> (consumer op type, transpose_b), found by walking back from consumers.

    The walk looks through Identity/Cast/fake-quant ops (first input) and Mul (both inputs: prune-preserving
    QAT multiplies the kernel by a float32 mask of the same shape, which is weight data too), but never into
    the per-channel scales this module writes.
    """
    nodes = {n.name: n for n in _all_nodes(graph_def)}
    found = {}
    for node in list(nodes.values()):
        index = WEIGHT_CONSUMERS.get(node.op)
        if index is None or len(node.input) <= index:
            continue
        todo, steps = [_producer(node.input[index])], 0
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
            todo.extend(_producer(i) for i in (inputs[:2] if src.op == "Mul" else inputs[:1]))
    return found


def _all_nodes(graph_def):
    yield from graph_def.node
    for fdef in graph_def.library.function:
        yield from fdef.node_def


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


def _const(name: str, array: np.ndarray) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = tf.as_dtype(array.dtype).as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array))
    return node


def _cast(name: str, src: str, src_dtype, dst_dtype=tf.float32) -> node_def_pb2.NodeDef:
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
            stored = _const(node.name + "/md_f16", w.astype(np.float16))
            replaced = [stored, _cast(node.name, stored.name, tf.float16)]
        else:
            consumer, transpose_b = weights[node.name]
            q, scale = quantize_int8(w, _channel_axes(consumer, transpose_b, w.ndim))
            stored, scale_node = _const(node.name + "/md_q", q), _const(node.name + SCALE_SUFFIX, scale)
            cast = _cast(node.name + "/md_dequant", stored.name, tf.int8)
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
                uses[_producer(i)] = uses.get(_producer(i), 0) + 1

    def const_of(name):
        for _ in range(4):
            node = nodes.get(name)
            if node is None or node.op != "Identity":
                return node if node is not None and node.op == "Const" else None
            name = _producer(node.input[0])
        return None

    dropped = set()

    def release(name):  # one fewer use; a node nobody uses any more goes, and so may its inputs
        uses[name] -= 1
        if uses[name] == 0 and nodes[name].op in ("Const", "Identity"):
            dropped.add(name)
            for i in nodes[name].input:
                if not i.startswith("^"):
                    release(_producer(i))

    for n in list(graph_def.node):
        if n.op != "Mul" or len(n.input) != 2:
            continue
        srcs = [const_of(_producer(i)) for i in n.input]
        if any(c is None or c.attr["dtype"].type != tf.float32.as_datatype_enum for c in srcs):
            continue
        a, b = (tf.make_ndarray(c.attr["value"].tensor) for c in srcs)
        if a.shape != b.shape or a.size < 2:
            continue
        inputs = [_producer(i) for i in n.input]
        folded = _const(n.name, (a * b).astype(np.float32))
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


class _Served(tf.Module):
    """Holds the serving function so tf.saved_model.save can track it."""


def save(graph_def: graph_pb2.GraphDef, inputs: Names, outputs: Names, specs: list[tf.TensorSpec],
         out_dir: str) -> None:
    """Save a frozen graph as a SavedModel with one `serving_default` signature: inputs named by `specs`,
    outputs by the keys of `outputs`."""
    module = _Served()
    run = imported(graph_def, inputs, outputs, "model")
    keys = [s.name for s in specs]

    @tf.function(input_signature=list(specs))
    def serve(*args):
        return run(dict(zip(keys, args)))

    module.serve = serve
    tf.saved_model.save(module, out_dir, signatures={"serving_default": serve})


def export(fn, specs: list[tf.TensorSpec], out_dir: str, storage: str = "float32") -> None:
    """Freeze `fn`, store its weights as `storage`, and save the SavedModel to `out_dir`."""
    graph_def, inputs, outputs = freeze(fn, specs)
    save(compress_weights(graph_def, storage), inputs, outputs, specs, out_dir)
