"""Load the source model: a Keras file (.keras, .h5) or a SavedModel directory, into a `Source`.

A Keras model can be pruned and trained (QAT); a plain SavedModel without Keras metadata can still be
weight-quantized through its `serving_default` signature. Loading failures become `CorruptModel`.
"""
from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

from modeldeploy.storage.errors import BadArguments, CorruptModel


@dataclasses.dataclass
class Source:
    """The model to optimize and how it is served (one input tensor, one output tensor)."""

    fn: object                  # callable: float input tensor -> output tensor (graph-traceable)
    input_key: str              # serving signature input name
    output_key: str             # serving signature output name
    input_shape: tuple          # with batch dimension None
    input_dtype: object
    output_shape: tuple
    keras: object | None = None  # tf_keras.Model when the source is Keras (pruning and QAT need it)
    keep_alive: object | None = None  # the loaded SavedModel object whose variables `fn` reads


def _keras():
    import tf_keras
    return tf_keras


def from_keras(model) -> Source:
    """A Source from an in-memory tf_keras model."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise CorruptModel(f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; the "
                           "optimizer supports exactly one of each")
    input_shape = (None,) + tuple(model.input_shape[1:])
    output_shape = (None,) + tuple(model.output_shape[1:])
    return Source(fn=lambda x: model(x, training=False), input_key=model.input_names[0],
                  output_key=model.output_names[0], input_shape=input_shape, input_dtype=model.inputs[0].dtype,
                  output_shape=output_shape, keras=model)


UNSAFE_HINT = ("convert it to a .keras file (whose loader refuses code) or to a SavedModel without Lambda layers, "
               "or ask the cluster administrator to allow code-carrying formats (operator setting "
               "MODELDEPLOY_ALLOW_UNSAFE_MODEL_FORMATS=1, which gives the Job --allow-unsafe-model-formats)")


def _lambda_layers(metadata_path: str) -> bool:
    """Whether a Keras SavedModel's metadata holds a Lambda layer: its Python code runs when Keras loads it."""
    with open(metadata_path, "rb") as fh:
        return b'"class_name": "Lambda"' in fh.read()


def load(path: str, allow_unsafe: bool = False) -> Source:
    """Load a local model file or directory (already downloaded).

    A model is a tenant's file, and some formats run Python when loaded: an HDF5 (.h5) file's Lambda layers,
    a Keras SavedModel's Lambda layers. Those are refused unless `allow_unsafe` (the administrator's choice);
    a .keras file is loaded in Keras' safe mode, which refuses code."""
    lower = path.lower()
    if os.path.isfile(path):
        if not lower.endswith((".keras", ".h5", ".hdf5")):
            raise BadArguments(f"--source: {os.path.basename(path)!r} is a file but not .keras or .h5; give a "
                               "Keras file or a SavedModel directory")
        if lower.endswith((".h5", ".hdf5")) and not allow_unsafe:
            raise BadArguments(f"--source: {os.path.basename(path)} is a legacy HDF5 model, which can run "
                               f"arbitrary Python when loaded (Lambda layers); {UNSAFE_HINT}")
        try:
            if lower.endswith(".keras"):
                return from_keras(_keras().models.load_model(path, compile=False, safe_mode=not allow_unsafe))
            return from_keras(_keras().models.load_model(path, compile=False))
        except (CorruptModel, BadArguments):
            raise
        except Exception as exc:  # noqa: BLE001 - anything the loader throws means unusable input
            raise CorruptModel(f"--source: cannot load Keras file {os.path.basename(path)}: {exc}") from None
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise CorruptModel(f"--source: {path} is neither a Keras file nor a SavedModel directory (no "
                           "saved_model.pb)")
    metadata = os.path.join(path, "keras_metadata.pb")
    if os.path.isfile(metadata):
        if not allow_unsafe and _lambda_layers(metadata):
            raise BadArguments(f"--source: the Keras SavedModel has Lambda layers, whose Python code runs when "
                               f"it is loaded; {UNSAFE_HINT}")
        try:
            return from_keras(_keras().models.load_model(path, compile=False))
        except CorruptModel:
            raise
        except Exception:  # noqa: BLE001 - fall back to the plain SavedModel signature below
            pass
    return _from_signature(path)


def _from_signature(path: str) -> Source:
    try:
        loaded = tf.saved_model.load(path)
        sig = loaded.signatures["serving_default"]
    except KeyError:
        raise CorruptModel(f"--source: SavedModel {path} has no serving_default signature") from None
    except Exception as exc:  # noqa: BLE001
        raise CorruptModel(f"--source: cannot load SavedModel {path}: {exc}") from None
    _, kwargs = sig.structured_input_signature
    outputs = sig.structured_outputs
    if len(kwargs) != 1 or len(outputs) != 1:
        raise CorruptModel(f"--source: serving_default has inputs {sorted(kwargs)} and outputs "
                           f"{sorted(outputs)}; the optimizer supports exactly one of each")
    (in_key, spec), = kwargs.items()
    (out_key, out_spec), = outputs.items()
    return Source(fn=lambda x: sig(**{in_key: x})[out_key], input_key=in_key, output_key=out_key,
                  input_shape=(None,) + tuple(spec.shape[1:]), input_dtype=spec.dtype,
                  output_shape=(None,) + tuple(out_spec.shape[1:]), keep_alive=loaded)


def input_spec(src: Source) -> tf.TensorSpec:
    """The serving signature's input spec (dynamic batch)."""
    return tf.TensorSpec(src.input_shape, src.input_dtype, name=src.input_key)
