"""Load the source model: a Keras file (.keras, .h5) or a SavedModel directory, into a `Source`.

Three kinds, told apart by what the files say, each with its own optimizer path:
- **tf-keras** (`.h5`, a `.keras` file written by tf-keras, a SavedModel with `keras_metadata.pb`): pruned and
  QAT-trained with tensorflow-model-optimization, which works on tf-keras models only.
- **Keras 3** (a `.keras` file whose metadata says Keras 3, what `model.save()` writes with TensorFlow 2.16+):
  loaded with Keras 3 itself in safe mode; pruned by magnitude with fine-tuning on its variables
  (`prune.prune_variables`).
- **SavedModel** (any other, e.g. Keras 3's `model.export()` or a `tf.Module`): served through its
  `serving_default` signature; pruned the same way on its trainable variables when it has them.
Every kind may have several named inputs and outputs (the serving signature's). Loading failures become
`CorruptModel`; a model the optimizer cannot handle is `UnsupportedModel`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zipfile

import tensorflow as tf

from modeldeploy.storage.errors import BadArguments, CorruptModel, first_line

TF_KERAS, KERAS3, SAVED_MODEL = "tf-keras", "keras3", "savedmodel"


@dataclasses.dataclass
class Source:
    """The model to optimize and how it is served."""

    fn: object                  # callable: {input key: tensor} -> {output key: tensor} (graph-traceable)
    inputs: dict                # input key -> tf.TensorSpec (batch dimension None, named by its key)
    outputs: dict               # output key -> shape (batch dimension None)
    kind: str = SAVED_MODEL
    keras: object | None = None  # the tf_keras.Model (tfmot prunes and QAT-trains it)
    variables: tuple = ()       # trainable variables `fn` reads (magnitude pruning of Keras 3 / SavedModels)
    keep_alive: object | None = None  # the loaded object whose variables `fn` reads

    @property
    def input_keys(self) -> list[str]:
        return list(self.inputs)

    @property
    def output_keys(self) -> list[str]:
        return list(self.outputs)


def _keras():
    import tf_keras
    return tf_keras


def _spec(key: str, shape, dtype) -> tf.TensorSpec:
    return tf.TensorSpec((None,) + tuple(shape[1:]), tf.as_dtype(dtype), name=key)


def _as_dict(keys: list[str], result) -> dict:
    if isinstance(result, dict):
        return dict(result)
    flat = tf.nest.flatten(result)
    return dict(zip(keys, flat))


def keras_call(model, in_keys: list[str], out_keys: list[str]):
    """`model` as a Source function keyed by `in_keys`/`out_keys` in the model's order. A pruned or QAT-wrapped
    copy renames its layers (quant_digit), so it is called with the source's keys: the published signature
    keeps the names clients send."""
    def fn(inputs: dict):
        args = inputs[in_keys[0]] if len(in_keys) == 1 else [inputs[k] for k in in_keys]
        return _as_dict(out_keys, model(args, training=False))
    return fn


def from_keras(model) -> Source:
    """A Source from an in-memory tf_keras model (inputs and outputs keyed by the layers' names)."""
    in_keys, out_keys = list(model.input_names), list(model.output_names)
    inputs = {k: _spec(k, t.shape, t.dtype) for k, t in zip(in_keys, model.inputs)}
    outputs = {k: (None,) + tuple(t.shape[1:]) for k, t in zip(out_keys, model.outputs)}
    return Source(fn=keras_call(model, in_keys, out_keys), inputs=inputs, outputs=outputs, kind=TF_KERAS,
                  keras=model)


def from_keras3(model) -> Source:
    """A Source from a Keras 3 model, keyed as Keras 3's own `model.export()` keys its serving signature:
    inputs by their names, outputs `output_0`, `output_1`, ..."""
    in_keys = [t.name for t in model.inputs]
    out_keys = [f"output_{i}" for i in range(len(model.outputs))]
    inputs = {k: _spec(k, t.shape, t.dtype) for k, t in zip(in_keys, model.inputs)}
    outputs = {k: (None,) + tuple(t.shape[1:]) for k, t in zip(out_keys, model.outputs)}
    variables = tuple(getattr(v, "value", v) for v in model.trainable_variables)
    return Source(fn=keras_call(model, in_keys, out_keys), inputs=inputs, outputs=outputs, kind=KERAS3,
                  variables=variables, keep_alive=model)


UNSAFE_HINT = ("convert it to a .keras file (whose loader refuses code) or to a SavedModel without Lambda layers, "
               "or ask the cluster administrator to allow code-carrying formats (operator setting "
               "MODELDEPLOY_ALLOW_UNSAFE_MODEL_FORMATS=1, which gives the Job --allow-unsafe-model-formats)")


def _lambda_layers(metadata_path: str) -> bool:
    """Whether a Keras SavedModel's metadata holds a Lambda layer: its Python code runs when Keras loads it."""
    with open(metadata_path, "rb") as fh:
        return b'"class_name": "Lambda"' in fh.read()


def keras_file_version(path: str) -> str | None:
    """The Keras version that wrote a .keras zip (its metadata.json), None when unreadable."""
    try:
        with zipfile.ZipFile(path) as zf:
            return str(json.loads(zf.read("metadata.json")).get("keras_version") or "") or None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _load_keras_file(path: str, allow_unsafe: bool) -> Source:
    lower = path.lower()
    if lower.endswith((".h5", ".hdf5")):
        return from_keras(_keras().models.load_model(path, compile=False))
    version = keras_file_version(path)
    if version is None:
        raise CorruptModel(f"--source: {os.path.basename(path)} is not a .keras archive (no readable "
                           "metadata.json); save it with model.save('model.keras')")
    if int(version.split(".")[0]) >= 3:
        import keras  # Keras 3 (TF_USE_LEGACY_KERAS only redirects tf.keras to tf-keras)
        return from_keras3(keras.saving.load_model(path, compile=False, safe_mode=not allow_unsafe))
    return from_keras(_keras().models.load_model(path, compile=False, safe_mode=not allow_unsafe))


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
            return _load_keras_file(path, allow_unsafe)
        except (CorruptModel, BadArguments):
            raise
        except Exception as exc:  # noqa: BLE001 - anything the loader throws means unusable input
            raise CorruptModel(f"--source: cannot load Keras file {os.path.basename(path)}: "
                               f"{first_line(exc, 500)}") from None
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
        raise CorruptModel(f"--source: cannot load SavedModel {path}: {first_line(exc, 500)}") from None
    _, kwargs = sig.structured_input_signature
    inputs = {k: _spec(k, s.shape, s.dtype) for k, s in sorted(kwargs.items())}
    outputs = {k: (None,) + tuple(s.shape[1:]) for k, s in sorted(sig.structured_outputs.items())}
    # The variables the signature itself reads (a Keras 3 export, a tf.Module): what pruning may change.
    variables = tuple(sig.trainable_variables)

    def fn(x: dict):
        return dict(sig(**x))

    return Source(fn=fn, inputs=inputs, outputs=outputs, kind=SAVED_MODEL, variables=variables,
                  keep_alive=loaded)


def input_specs(src: Source) -> list[tf.TensorSpec]:
    """The serving signature's input specs (dynamic batch), in the Source's input order."""
    return list(src.inputs.values())
