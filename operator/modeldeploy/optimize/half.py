"""Float16 compute for GPU serving: a frozen float32 serving graph rewritten to compute in half precision.

`quantize: float16` stores weights as float16 and casts them back to float32 (weights.compress_weights), so the
served model computes in float32 and only the download is smaller. `to_half` builds the variant a GPU pod
serves (published beside the SavedModel as `gpu-float16/`, see storage/publish.py):
- every float32 input is cast to half at the entry (the Placeholders keep float32, so clients send what they
  sent before);
- every float32 constant that half ops consume (the weights) becomes a half constant, with no Cast back;
  finite values beyond float16's range (+-65504, e.g. the -1e9 of attention masks) are clipped to it rather
  than becoming inf. Constants (and their Identity) that only float32 inputs consume stay float32;
- every float32 type attribute of every op, in the graph and in the function library (the While/If bodies of
  recurrent layers and loops; the functions are renamed, as in export.strip_must_compile), becomes half when
  TensorFlow has a GPU kernel for the op in half. An op whose kernel needs some float32 attributes kept (the
  scale/mean/variance `U` of FusedBatchNormV3) keeps exactly those; where a float32 tensor then meets a half
  one, a Cast is inserted. An op with a float32 attribute and no half GPU kernel at all (MatrixInverse,
  Bucketize, ...) makes the whole rewrite fail with `HalfUnsupported`, which lists those ops: the caller skips
  the variant rather than serve a graph that would silently fall back to the CPU or be half converted;
- every float output is cast back to float32, so the serving signature (names, dtypes, shapes) is unchanged.
Activations beyond float16's range become inf: the pipeline refuses a variant with non-finite answers.

Why this and not the alternatives:
- Grappler's `auto_mixed_precision` rewrites the graph when TF Serving loads it, and only on a GPU (compute
  capability 7.0 and up) with the pass enabled in the session config: on this CPU it skips itself, so what a
  pod would run could not be inspected or its accuracy measured before publishing. Its policy (float16 for
  MatMul/Conv and their neighbours, float32 for Softmax, Exp, Sum, Mean and the like) is more conservative;
  here those ops run in half too. TensorFlow's GPU Softmax accumulates half in float32, and MatMul and Conv2D
  in half accumulate in float32 by default (TF_FP16_MATMUL_USE_FP32_COMPUTE, TF_FP16_CONV_USE_FP32_COMPUTE);
  the accuracy on the validation split, measured before publishing (gpu_variant.py), is the safety net.
- Keras mixed precision (`mixed_float16`) needs a tf-keras model rebuilt under the policy; it covers neither
  Keras 3 files nor plain SavedModels, and keeps float32 variables cast on every call (float32 on disk).
- This rewrite works on any frozen graph the optimizer exports, its result is a plain SavedModel whose op
  types and dtypes can be read from the files, and TensorFlow's CPU kernels for half run it here, so its
  predictions are compared with the float32 baseline on the validation split before it is published. Half on
  a CPU is emulated and slow: no speed is measured here; the variant's speed is a GPU measurement only.
"""
from __future__ import annotations

import collections
import functools
import itertools
import logging

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.python.framework import op_def_registry

from modeldeploy.optimize import export, graphinfo, weights

log = logging.getLogger(__name__)

FLOAT, HALF = tf.float32.as_datatype_enum, tf.float16.as_datatype_enum
HALF_MAX = float(np.finfo(np.float16).max)      # 65504
RENAMED_SUFFIX = "_md_half"
# Ops that run a body from the function library: their types are those of the (converted) body, and their
# kernels are type-agnostic.
CALLS = frozenset({"While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase", "PartitionedCall",
                   "StatefulPartitionedCall"})
MAX_SUBSET_ATTRS = 4    # ops with more float32 type attributes are tried all-half only
REVERTIBLE = frozenset({"Const", "Identity", "Snapshot", "StopGradient"})   # may stay float32 for float consumers


class HalfUnsupported(ValueError):
    """The graph holds float ops that cannot compute in half on a GPU; `ops`: op type -> node names."""

    def __init__(self, ops: dict[str, list[str]]):
        self.ops = {op: sorted(nodes) for op, nodes in sorted(ops.items())}
        listed = "; ".join(f"{op} ({', '.join(nodes[:3])}{', ...' if len(nodes) > 3 else ''})"
                           for op, nodes in self.ops.items())
        super().__init__(f"no float16 GPU kernel for {len(self.ops)} op type(s): {listed}")


def to_half(graph_def: graph_pb2.GraphDef, inputs: dict, outputs: dict) -> tuple[graph_pb2.GraphDef, dict, dict]:
    """The half-computing copy of a frozen graph (as `export.freeze_for_serving` returns it): returns
    (graph_def, input key -> tensor name, output key -> tensor name) for `export.save`. Raises HalfUnsupported."""
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    library = {f.signature.name: f for f in out.library.function}
    top = _Scope(out.node, library, None, [])
    original = {key: top.tensor_type(name) for key, name in outputs.items()}
    top.results = [(outputs[key], dtype) for key, dtype in original.items()]

    for fdef in library.values():   # every float32 argument and result of every function becomes half
        for arg in list(fdef.signature.input_arg) + list(fdef.signature.output_arg):
            if arg.type == FLOAT:
                arg.type = HALF
    scopes = [top] + [_Scope(f.node_def, library, f, [(f.ret[a.name], a.type) for a in f.signature.output_arg
                                                       if a.type]) for f in library.values()]
    feeds = {export.producer(name) for name in inputs.values()}
    unsupported = collections.defaultdict(list)
    for scope in scopes:
        for node in scope.nodes:
            if not (node.op == "Placeholder" and scope is top and node.name in feeds):
                _convert(node, library, unsupported, scope)
    if unsupported:
        raise HalfUnsupported(unsupported)
    clipped = []
    for scope in scopes:
        scope.keep_float()
        clipped += scope.store_half()
        scope.reconcile()
    if clipped:
        log.warning("float16: %d constant(s) held finite values beyond +-%g, clipped to it (%s)", len(clipped),
                    HALF_MAX, ", ".join(clipped[:3]) + (", ..." if len(clipped) > 3 else ""))
    new_outputs = {}
    for key, name in outputs.items():    # the signature keeps its float32 outputs
        if original[key] == FLOAT and top.tensor_type(name) == HALF:
            name = top.cast(name, HALF, FLOAT) + ":0"
        new_outputs[key] = name
    if library:  # the float32 originals stay registered in TensorFlow under their names
        export._rename_functions(out, RENAMED_SUFFIX)
    return out, dict(inputs), new_outputs


def _op_def(op: str, library: dict):
    return library[op].signature if op in library else op_def_registry.get(op)


def _attr(node, op_def, name):
    """A node's attribute value, or the op's default for it (None when neither)."""
    if name in node.attr:
        return node.attr[name]
    for a in op_def.attr:
        if a.name == name and a.HasField("default_value"):
            return a.default_value
    return None


def _float_attrs(node, op_def) -> list[str]:
    names = []
    for a in op_def.attr:
        value = _attr(node, op_def, a.name)
        if value is not None and ((a.type == "type" and value.type == FLOAT)
                                  or (a.type == "list(type)" and FLOAT in value.list.type)):
            names.append(a.name)
    return names


def _with_half(node, op_def, names) -> node_def_pb2.NodeDef:
    trial = node_def_pb2.NodeDef()
    trial.CopyFrom(node)
    for name in names:
        value = _attr(node, op_def, name)
        trial.attr[name].CopyFrom(value)
        if value.type == FLOAT:
            trial.attr[name].type = HALF
        else:
            types = [HALF if t == FLOAT else t for t in value.list.type]
            del trial.attr[name].list.type[:]
            trial.attr[name].list.type.extend(types)
    return trial


@functools.lru_cache(maxsize=None)
def _gpu_kernels(op: str) -> tuple:
    from tensorflow.python.framework import kernels

    return tuple(k for k in kernels.get_registered_kernels_for_op(op).kernel if k.device_type in ("GPU", "DEFAULT"))


def _convert(node, library, unsupported, scope: "_Scope") -> None:
    """Turn the node's float32 types into half in place, or record it in `unsupported`. A constant only
    changes its dtype here; its values are converted by `_Scope.store_half` once it is known to stay half."""
    op_def = _op_def(node.op, library)
    where = f"{scope.fdef.signature.name}/{node.name}" if scope.fdef is not None else node.name
    if op_def is None:
        unsupported[f"{node.op} (not a registered op)"].append(where)
        return
    names = _float_attrs(node, op_def)
    if not names:
        return
    if node.op in CALLS or node.op == "Const":
        node.CopyFrom(_with_half(node, op_def, names))
        if node.op in REVERTIBLE:
            scope.flipped.add(node.name)
        return
    subsets = [names] if len(names) > MAX_SUBSET_ATTRS else \
        [list(s) for size in range(len(names), 0, -1) for s in itertools.combinations(names, size)]
    for subset in subsets:   # most half first: FusedBatchNormV3 keeps U (scale, mean, variance) float32
        trial = _with_half(node, op_def, subset)
        if any(graphinfo.kernel_fits(k, trial) for k in _gpu_kernels(node.op)):
            node.CopyFrom(trial)
            if node.op in REVERTIBLE:
                scope.flipped.add(node.name)
            return
    unsupported[node.op].append(where)


def _arg_types(args, node, op_def) -> list[tuple[str, list[int]]]:
    """(arg name, dtypes) of each input or output argument of a node, lists and repeated args expanded."""
    out = []
    for arg in args:
        if arg.type_list_attr:
            types = list(_attr(node, op_def, arg.type_list_attr).list.type)
        else:
            dtype = arg.type or _attr(node, op_def, arg.type_attr).type
            types = [dtype] * (_attr(node, op_def, arg.number_attr).i if arg.number_attr else 1)
        out.append((arg.name, types))
    return out


class _Scope:
    """The nodes of the top-level graph (fdef None) or of one function body, with their tensors' dtypes;
    `results`: (tensor, dtype) that leave the scope (the signature's outputs, the function's results)."""

    def __init__(self, nodes, library: dict, fdef, results: list[tuple[str, int]]):
        self.nodes, self.library, self.fdef, self.results = nodes, library, fdef, results
        self.by_name = {n.name: n for n in nodes}
        self.casts: dict[tuple[str, int], str] = {}
        self.flipped: set[str] = set()   # constants and pass-throughs made half, which may go back to float32

    def _outputs(self, node) -> list[tuple[str, list[int]]]:
        op_def = _op_def(node.op, self.library)
        return _arg_types(op_def.output_arg, node, op_def)

    def _inputs(self, node) -> list[tuple[int, int]]:
        """(index in node.input, dtype the node wants there) of each data input."""
        op_def = _op_def(node.op, self.library)
        wanted = [t for _, types in _arg_types(op_def.input_arg, node, op_def) for t in types]
        return list(zip([i for i, ref in enumerate(node.input) if not ref.startswith("^")], wanted))

    def tensor_type(self, ref: str) -> int:
        parts = ref.split(":")
        if self.fdef is not None and len(parts) == 1:    # a function argument
            return next(a.type for a in self.fdef.signature.input_arg if a.name == parts[0])
        node = self.by_name[parts[0]]
        if self.fdef is None:   # graph: node:flat_index
            return [t for _, types in self._outputs(node) for t in types][int(parts[1]) if len(parts) > 1 else 0]
        return dict(self._outputs(node))[parts[1]][int(parts[2]) if len(parts) > 2 else 0]  # node:arg:index

    def keep_float(self) -> None:
        """Constants and pass-throughs (Identity) whose every consumer wants float32 -- the scale, mean and
        variance of FusedBatchNormV3 -- go back to float32: no rounding to half and Cast back."""
        while True:
            wants = collections.defaultdict(set)
            for node in self.nodes:
                for i, want in self._inputs(node):
                    wants[node.input[i].split(":")[0]].add(want)
            for ref, want in self.results:
                wants[ref.split(":")[0]].add(want)
            back = [n for n in self.flipped if wants.get(n) == {FLOAT}]
            if not back:
                return
            for name in back:
                node = self.by_name[name]
                node.attr["dtype" if node.op == "Const" else "T"].type = FLOAT
                self.flipped.discard(name)

    def store_half(self) -> list[str]:
        """Convert the values of the constants that stay half; returns those clipped to the half range."""
        clipped = []
        for node in self.nodes:
            if node.op == "Const" and node.attr["dtype"].type == HALF and node.attr["value"].tensor.dtype == FLOAT:
                value = tf.make_ndarray(node.attr["value"].tensor)
                big = np.isfinite(value) & (np.abs(value) > HALF_MAX)
                if big.any():
                    clipped.append(node.name)
                    value = np.where(big, np.sign(value) * HALF_MAX, value)
                node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.astype(np.float16)))
        return clipped

    def cast(self, ref: str, src: int, dst: int) -> str:
        """A Cast of tensor `ref` to `dst` in this scope (one per tensor and dtype); returns its tensor name."""
        if (ref, dst) not in self.casts:
            base = ref.replace(":", "_") + ("/md_to_half" if dst == HALF else "/md_to_float32")
            name, i = base, 1
            while name in self.by_name:
                name, i = f"{base}_{i}", i + 1
            node = self.nodes.add()
            node.CopyFrom(weights.cast_node(name, ref, tf.as_dtype(src), tf.as_dtype(dst)))
            self.by_name[name] = node
            self.casts[(ref, dst)] = name if self.fdef is None else f"{name}:y:0"
        return self.casts[(ref, dst)]

    def _fit(self, ref: str, want: int, where: str) -> str:
        have = self.tensor_type(ref)
        if have == want:
            return ref
        if {have, want} == {FLOAT, HALF}:
            return self.cast(ref, have, want)
        raise ValueError(f"float16: {where} expects {tf.as_dtype(want).name} but {ref} is {tf.as_dtype(have).name}")

    def reconcile(self) -> None:
        """Insert a Cast wherever a float32 tensor meets a half input (or the reverse) after the conversion;
        the signature's outputs are cast back by `to_half`."""
        for node in list(self.nodes):
            for i, want in self._inputs(node):
                node.input[i] = self._fit(node.input[i], want, f"{node.op} {node.name}")
        if self.fdef is not None:
            for arg in self.fdef.signature.output_arg:
                if arg.type:
                    self.fdef.ret[arg.name] = self._fit(self.fdef.ret[arg.name], arg.type,
                                                        f"result {arg.name} of {self.fdef.signature.name}")
