"""Export a model as a SavedModel that TF Serving serves: freeze, strip XLA must-compile, save.

TFLite converters produce .tflite files, not SavedModels, and TF Serving serves SavedModels. So quantized
weights are stored inside the SavedModel graph:
1. the model's forward function is frozen (variables become constants) -- `freeze`, here;
2. its weight constants are replaced by float16 or int8 constants plus dequantizing ops under the original node
   names -- `weights.compress_weights` (weights.py);
3. the rewritten graph is imported into a `serving_default` tf.function and saved -- `save`, here.
XLA must-compile (`tf.function(jit_compile=True)`, `_XlaMustCompile=true` on a function or call node) is removed
while freezing: TF Serving disables XLA unless started with an XLA flag, so a published function that must be
compiled loads but fails every request; and grappler does not inline a must-compile function, so its weights
would reach their MatMul/Conv2D only through a call boundary, out of the weight rewrite's sight (nothing would
be quantized). The same ops then run as an ordinary TensorFlow graph: same signature, same numerics up to
float round-off.
"""
from __future__ import annotations

import logging

import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from modeldeploy.storage.errors import first_line

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
    fed = {producer(n) for n in inputs.values()}
    unfed = sorted(n.name for n in all_nodes(graph_def) if n.op == "Placeholder" and n.name not in fed
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
    for node in all_nodes(graph_def):
        if node.op in renamed:  # a function called directly as an op
            node.op = renamed[node.op]
    for grad in library.gradient:
        grad.function_name = renamed.get(grad.function_name, grad.function_name)
        grad.gradient_func = renamed.get(grad.gradient_func, grad.gradient_func)


def producer(name: str) -> str:
    """The node that produces tensor or control input `name` ("^node", "node:1" -> "node")."""
    return name.lstrip("^").split(":")[0]


def all_nodes(graph_def):
    """Every node of the graph: top level, then each library function's body."""
    yield from graph_def.node
    for fdef in graph_def.library.function:
        yield from fdef.node_def


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

