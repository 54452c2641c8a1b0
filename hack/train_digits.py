#!/usr/bin/env python3
"""Train the small digits model of the demo and upload it, with its dataset, to S3.

scikit-learn's bundled 8x8 digits (`load_digits`, nothing is downloaded), a small CNN in tf-keras (the Keras
that tensorflow-model-optimization prunes), saved as a Keras SavedModel directory (keras_metadata.pb inside, so
the optimizer can prune it) plus `digits.npz` with x_train, y_train, x_val, y_val (the optimizer's dataset
format: fine-tuning, int8 calibration and the accuracy gate).

    .venv/bin/python hack/train_digits.py                          # the demo's locations (defaults below)
    .venv/bin/python hack/train_digits.py --model-uri s3://models/x/base --dataset-uri s3://models/x/d.npz

S3 settings come from AWS_* in the environment, else from .cluster/s3.env (written by hack/s3-up.sh).
Tests import it by path (hack/ is not a package):

    spec = importlib.util.spec_from_file_location("train_digits", ROOT / "hack" / "train_digits.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    model_dir, npz, accuracy = mod.train(tmp_dir, epochs=4)
    mod.upload(model_dir, npz, "s3://models/<prefix>/base", "s3://models/<prefix>/digits.npz", s3.env)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")   # before TensorFlow is imported (tf-keras, as tfmot needs)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_URI = "s3://models/digits/base"                 # examples/gpu-pruned-int8-autoscaling.yaml
DEFAULT_DATASET_URI = "s3://models/datasets/digits.npz"
TRAIN_SIZE = 1400                                             # of 1797; the rest is the validation split


def digits_arrays(seed: int = 0):
    """(x_train, y_train, x_val, y_val): 8x8x1 float32 images in [0, 1] and int64 labels, shuffled by `seed`."""
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], data.target[order].astype(np.int64)
    return x[:TRAIN_SIZE], y[:TRAIN_SIZE], x[TRAIN_SIZE:], y[TRAIN_SIZE:]


def build_model():
    """The digits CNN (the architecture the optimizer's tests and benchmark use)."""
    import tf_keras as keras

    return keras.Sequential([
        keras.layers.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax", name="digit"),
    ])


def train(out_dir: str | os.PathLike, epochs: int = 8, seed: int = 0, keras_file: bool = False) \
        -> tuple[str, str, float]:
    """Train and save; returns (SavedModel directory, or with `keras_file` a .keras file with the optimizer's
    state as a user's training job leaves it, .npz path, validation accuracy)."""
    import numpy as np
    import tf_keras as keras

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_val, y_val = digits_arrays(seed)
    keras.utils.set_random_seed(seed)
    model = build_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    model_dir = out / ("digits.keras" if keras_file else "digits-savedmodel")
    if keras_file:
        model.save(str(model_dir))
    else:
        model.save(str(model_dir), save_format="tf")      # SavedModel directory with Keras metadata
    npz = out / "digits.npz"
    np.savez(npz, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
    return str(model_dir), str(npz), float(accuracy)


def read_s3_env(path: Path = ROOT / ".cluster" / "s3.env") -> dict[str, str]:
    """AWS_* settings: the process environment wins over .cluster/s3.env (KEY=VALUE lines)."""
    env = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                env[key.removeprefix("export ").strip()] = value.strip().strip('"').strip("'")
    env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
    return env


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise SystemExit(f"train_digits: {uri!r} is not s3://bucket/key")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key.rstrip("/")


def upload(model_dir: str, npz_path: str, model_uri: str, dataset_uri: str, env: dict[str, str]) -> list[str]:
    """Upload the SavedModel directory below `model_uri` (replacing what was there) and the .npz to
    `dataset_uri`; returns the URIs written."""
    import boto3

    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL") if not env.get(k)]
    if missing:
        raise SystemExit(f"train_digits: {', '.join(missing)} not set (start S3 with hack/s3-up.sh, which "
                         "writes .cluster/s3.env, or export them)")
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env.get("AWS_REGION", "us-east-1"),
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    bucket, prefix = _split(model_uri)
    # A stale file from an earlier model under the same prefix would make a mixed SavedModel.
    stale = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    if stale:
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in stale]})
    written = []
    for path in sorted(Path(model_dir).rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(model_dir).as_posix()}"
            client.upload_file(str(path), bucket, key)
            written.append(f"s3://{bucket}/{key}")
    dbucket, dkey = _split(dataset_uri)
    client.upload_file(npz_path, dbucket, dkey)
    written.append(dataset_uri)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", default=DEFAULT_MODEL_URI, help=f"default {DEFAULT_MODEL_URI}")
    parser.add_argument("--dataset-uri", default=DEFAULT_DATASET_URI, help=f"default {DEFAULT_DATASET_URI}")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--work-dir", default=str(ROOT / ".cluster" / "demo"), help="where the files are written")
    args = parser.parse_args(argv)
    model_dir, npz, accuracy = train(args.work_dir, epochs=args.epochs)
    written = upload(model_dir, npz, args.model_uri, args.dataset_uri, read_s3_env())
    print(f"trained the digits CNN: validation accuracy {accuracy:.3f}")
    print(f"uploaded {len(written) - 1} model files to {args.model_uri}/ and the dataset to {args.dataset_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
