"""Atomic publish and verified pull on the local file system (the same code paths S3 uses)."""
import json
import os

import pytest

from modeldeploy.storage import publish, transfer
from modeldeploy.storage.errors import AlreadyPublished, NotPublished, OutputConflict
from modeldeploy.storage.uris import parse_uri


@pytest.fixture
def model_dir(tmp_path):
    root = tmp_path / "model"
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph" * 100)
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(5000))
    return str(root)


@pytest.fixture
def output(tmp_path):
    return parse_uri(f"file://{tmp_path}/out")


def test_publish_writes_files_then_marker_and_cleans_temp(model_dir, output):
    manifest = publish.publish(model_dir, output, 3)
    files = transfer.list_files(output)
    assert set(files) == {"3/saved_model.pb", "3/variables/variables.data-00000-of-00001", "3/_COMPLETE"}
    marker = json.loads(transfer.read_bytes(output.join("3", "_COMPLETE")))
    assert marker == manifest and marker["version"] == 3
    assert marker["files"]["saved_model.pb"]["size"] == 500
    assert publish.list_published(output) == [3]


def test_existing_version_is_never_overwritten_without_flag(model_dir, output):
    publish.publish(model_dir, output, 1)
    with pytest.raises(AlreadyPublished) as err:
        publish.publish(model_dir, output, 1)
    assert err.value.exit_code == 9 and "--overwrite" in err.value.message
    with open(os.path.join(model_dir, "saved_model.pb"), "wb") as fh:
        fh.write(b"new")
    publish.publish(model_dir, output, 1, overwrite=True)
    assert transfer.read_bytes(output.join("1", "saved_model.pb")) == b"new"


def test_failure_before_marker_leaves_no_visible_version(model_dir, output, monkeypatch, tmp_path):
    real = transfer.write_bytes

    def fail_on_marker(loc, data):
        if loc.name == publish.MARKER:
            raise RuntimeError("killed between copy and marker")
        return real(loc, data)

    monkeypatch.setattr(transfer, "write_bytes", fail_on_marker)
    with pytest.raises(RuntimeError):
        publish.publish(model_dir, output, 2)
    files = transfer.list_files(output)
    assert "2/saved_model.pb" in files and "2/_COMPLETE" not in files   # copied, but not complete
    assert not any(f.startswith(publish.TMP_PREFIX) for f in files)     # temp prefix cleaned
    assert publish.list_published(output) == []
    with pytest.raises(NotPublished) as err:
        publish.pull(output.join("2"), str(tmp_path / "dest"))
    assert err.value.exit_code == 10 and "_COMPLETE" in err.value.message
    assert not (tmp_path / "dest").exists()
    # A later publish of the same version clears the leftovers without --overwrite.
    monkeypatch.setattr(transfer, "write_bytes", real)
    publish.publish(model_dir, output, 2)
    assert publish.list_published(output) == [2]


def test_pull_copies_and_verifies(model_dir, output, tmp_path):
    publish.publish(model_dir, output, 5)
    dest = tmp_path / "serving" / "digits" / "5"
    publish.pull(output.join("5"), str(dest))
    assert (dest / "saved_model.pb").read_bytes() == b"graph" * 100
    assert (dest / "_COMPLETE").exists()
    # Idempotent: an init container that runs again replaces the directory.
    publish.pull(output.join("5"), str(dest))
    assert sorted(os.listdir(dest)) == ["_COMPLETE", "saved_model.pb", "variables"]


def test_pull_refuses_a_damaged_file(model_dir, output, tmp_path):
    publish.publish(model_dir, output, 6)
    stored = output.join("6", "saved_model.pb").path
    with open(stored, "wb") as fh:
        fh.write(b"x" * 500)   # same size, different bytes
    with pytest.raises(NotPublished) as err:
        publish.pull(output.join("6"), str(tmp_path / "dest"))
    assert "checksum" in err.value.message
    assert not (tmp_path / "dest").exists()


def test_pull_of_missing_version(output, tmp_path):
    with pytest.raises(NotPublished) as err:
        publish.pull(output.join("9"), str(tmp_path / "dest"))
    assert "not published" in err.value.message


@pytest.mark.parametrize("rel", ["../../escaped", "/etc/escaped", "a/./b", "a//b", "a\\..\\b", ""])
def test_pull_refuses_a_marker_listing_paths_outside_the_version(model_dir, output, tmp_path, rel):
    """Someone who can write to the bucket must not make the init container write outside its directory."""
    publish.publish(model_dir, output, 7)
    marker = output.join("7", "_COMPLETE")
    manifest = json.loads(transfer.read_bytes(marker))
    manifest["files"][rel] = manifest["files"]["saved_model.pb"]
    transfer.write_bytes(marker, json.dumps(manifest).encode())
    with pytest.raises(NotPublished) as err:
        publish.pull(output.join("7"), str(tmp_path / "dest" / "m"))
    assert "outside the version directory" in err.value.message
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "dest").exists()


def test_one_writer_at_a_time_per_version(model_dir, output):
    """Two Jobs publishing one version must not interleave their files under one marker."""
    from modeldeploy.storage.errors import PublishInProgress
    lock = publish._acquire(output, 4, "job-a")
    with pytest.raises(PublishInProgress) as err:
        publish.publish(model_dir, output, 4, writer="job-b")
    assert err.value.exit_code == 12 and "'job-a'" in err.value.message
    assert not any(f.startswith("4/") for f in transfer.list_files(output))       # b wrote nothing
    # job-a's retry (a new pod of the same Job, after a crash) takes its own lock over.
    publish.publish(model_dir, output, 4, writer="job-a")
    assert publish.list_published(output) == [4] and lock.name not in transfer.list_files(output)


def test_already_published_carries_the_versions_report_and_another_source_is_a_conflict(model_dir, output):
    with open(os.path.join(model_dir, "report.json"), "w") as fh:
        json.dump({"source": "s3://models/a", "compressionRatio": 4.0}, fh)
    publish.publish(model_dir, output, 2, source="s3://models/a")
    with pytest.raises(AlreadyPublished) as err:
        publish.check_not_published(output, 2, overwrite=False, source="s3://models/a")
    assert err.value.report == {"source": "s3://models/a", "compressionRatio": 4.0,
                                "uri": output.join("2").uri}
    # Two ModelDeployments sharing an outputUri: the second never adopts (serves) the first one's model.
    with pytest.raises(OutputConflict) as err:
        publish.publish(model_dir, output, 2, source="s3://models/b")
    assert err.value.exit_code == 13 and "s3://models/a" in err.value.message
    assert "spec.optimization.outputUri" in err.value.message


def test_a_stale_lock_of_another_writer_is_taken_over(model_dir, output, monkeypatch):
    publish._acquire(output, 5, "job-dead")
    later = publish.time.time() + publish.LOCK_STALE_SECONDS + 1
    monkeypatch.setattr(publish.time, "time", lambda: later)
    publish.publish(model_dir, output, 5, writer="job-new")
    assert publish.list_published(output) == [5]


def test_a_marker_over_damaged_files_is_not_already_published(model_dir, output):
    """A version whose files do not match its marker (e.g. two writers mixed them) is published again,
    never accepted by a retry as already published."""
    publish.publish(model_dir, output, 8)
    with open(output.join("8", "saved_model.pb").path, "wb") as fh:
        fh.write(b"x" * 7)
    publish.check_not_published(output, 8, overwrite=False)          # no AlreadyPublished
    publish.publish(model_dir, output, 8)
    assert json.loads(transfer.read_bytes(output.join("8", "_COMPLETE")))["files"]["saved_model.pb"]["size"] == 500
    assert os.path.getsize(output.join("8", "saved_model.pb").path) == 500


def test_create_exclusive_creates_once(output):
    loc = output.join("lock")
    assert transfer.create_exclusive(loc, b"a") is True
    assert transfer.create_exclusive(loc, b"b") is False
    assert transfer.read_bytes(loc) == b"a"


def test_a_pod_pulls_only_its_runtimes_artefact_with_the_warmup_records(model_dir, output, tmp_path):
    """What a pod pulls is what it serves: the SavedModel for tensorflow, model.tflite for tflite."""
    os.makedirs(os.path.join(model_dir, "assets.extra"))
    for rel, data in (("model.tflite", b"tflite" * 50), ("report.json", b"{}"),
                      ("assets.extra/tf_serving_warmup_requests", b"records")):
        with open(os.path.join(model_dir, rel), "wb") as fh:
            fh.write(data)
    publish.publish(model_dir, output, 1)
    pulled = {}
    for runtime in ("tensorflow", "tflite", None):
        dest = tmp_path / f"pulled-{runtime}"
        manifest = publish.pull(output.join("1"), str(dest), runtime)
        pulled[runtime] = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
        assert sorted(manifest["files"]) == [p for p in pulled[runtime] if p != "_COMPLETE"]
    assert pulled["tensorflow"] == ["_COMPLETE", "assets.extra/tf_serving_warmup_requests", "saved_model.pb",
                                    "variables/variables.data-00000-of-00001"]
    assert pulled["tflite"] == ["_COMPLETE", "assets.extra/tf_serving_warmup_requests", "model.tflite"]
    assert "report.json" in pulled[None] and "model.tflite" in pulled[None]


def test_model_onnx_goes_to_no_tf_serving_runtime(model_dir, output, tmp_path):
    """model.onnx (--export-onnx) is for teams that serve elsewhere: neither TF Serving runtime pulls it, only a
    pull of every file (no --runtime) does."""
    for rel, data in (("model.onnx", b"onnx" * 50), ("model.tflite", b"tflite" * 50)):
        with open(os.path.join(model_dir, rel), "wb") as fh:
            fh.write(data)
    files = ["saved_model.pb", "variables/variables.index", "model.tflite", "model.onnx", "report.json",
             "assets.extra/tf_serving_warmup_requests", "_COMPLETE"]
    assert publish.runtime_files(files, "tensorflow") == ["assets.extra/tf_serving_warmup_requests",
                                                          "saved_model.pb", "variables/variables.index"]
    assert publish.runtime_files(files, "tflite") == ["assets.extra/tf_serving_warmup_requests", "model.tflite"]
    assert "model.onnx" in publish.runtime_files(files, None)
    publish.publish(model_dir, output, 1)
    for runtime in ("tensorflow", "tflite"):
        manifest = publish.pull(output.join("1"), str(tmp_path / f"pulled-{runtime}"), runtime)
        assert "model.onnx" not in manifest["files"]
        assert not (tmp_path / f"pulled-{runtime}" / "model.onnx").exists()
    publish.pull(output.join("1"), str(tmp_path / "pulled-all"))
    assert (tmp_path / "pulled-all" / "model.onnx").read_bytes() == b"onnx" * 50


def test_tflite_runtime_of_a_version_without_model_tflite_is_not_published(model_dir, output, tmp_path):
    publish.publish(model_dir, output, 1)
    with pytest.raises(NotPublished, match="runtime tensorflow"):
        publish.pull(output.join("1"), str(tmp_path / "x"), "tflite")


VERSION_FILES = ["_COMPLETE", "assets.extra/tf_serving_warmup_requests", "fingerprint.pb", "model.tflite",
                 "report.json", "saved_model.pb", "variables/variables.data-00000-of-00001",
                 "gpu-float16/assets.extra/tf_serving_warmup_requests", "gpu-float16/saved_model.pb",
                 "gpu-float16/variables/variables.data-00000-of-00001"]
ROOT_SAVED_MODEL = ["assets.extra/tf_serving_warmup_requests", "fingerprint.pb", "saved_model.pb",
                    "variables/variables.data-00000-of-00001"]


@pytest.mark.parametrize("runtime, gpu, expected", [
    ("tensorflow", False, ROOT_SAVED_MODEL),
    ("tensorflow", True, [f for f in VERSION_FILES if f.startswith("gpu-float16/")]),
    ("tflite", False, ["assets.extra/tf_serving_warmup_requests", "model.tflite"]),
    ("tflite", True, ["assets.extra/tf_serving_warmup_requests", "model.tflite"]),
    (None, False, sorted(VERSION_FILES)),
])
def test_runtime_files_give_gpu_pods_the_float16_savedmodel_and_nobody_else(runtime, gpu, expected):
    assert publish.runtime_files(VERSION_FILES, runtime, gpu) == sorted(expected)


def test_a_gpu_pod_of_a_version_without_the_float16_savedmodel_gets_the_savedmodel():
    files = [f for f in VERSION_FILES if not f.startswith("gpu-float16/")]
    assert publish.runtime_files(files, "tensorflow", gpu=True) == ROOT_SAVED_MODEL
    assert publish.pull_layout(files, "tensorflow", gpu=True) == {f: f for f in ROOT_SAVED_MODEL}


def test_the_gpu_layout_puts_the_float16_savedmodel_at_the_top():
    assert publish.pull_layout(VERSION_FILES, "tensorflow", gpu=True) == {
        "gpu-float16/assets.extra/tf_serving_warmup_requests": "assets.extra/tf_serving_warmup_requests",
        "gpu-float16/saved_model.pb": "saved_model.pb",
        "gpu-float16/variables/variables.data-00000-of-00001": "variables/variables.data-00000-of-00001"}
    # Every file, as it is stored (no runtime): nothing moves.
    layout = publish.pull_layout(VERSION_FILES, None, gpu=True)
    assert all(k == v for k, v in layout.items()) and "gpu-float16/saved_model.pb" in layout


@pytest.fixture
def float16_version(model_dir, output):
    """A published version with the GPU variant: its files hold other bytes than the root's."""
    os.makedirs(os.path.join(model_dir, "gpu-float16", "variables"))
    os.makedirs(os.path.join(model_dir, "gpu-float16", "assets.extra"))
    os.makedirs(os.path.join(model_dir, "assets.extra"))
    for rel, data in (("gpu-float16/saved_model.pb", b"half" * 80), ("gpu-float16/variables/variables.index", b"i"),
                      ("gpu-float16/assets.extra/tf_serving_warmup_requests", b"half records"),
                      ("assets.extra/tf_serving_warmup_requests", b"records"), ("report.json", b"{}")):
        with open(os.path.join(model_dir, *rel.split("/")), "wb") as fh:
            fh.write(data)
    publish.publish(model_dir, output, 1)
    return output.join("1")


def _tree(dest) -> dict[str, bytes]:
    return {str(p.relative_to(dest)): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}


def test_pull_for_a_gpu_pod_places_the_float16_savedmodel_as_the_version(float16_version, tmp_path):
    manifest = publish.pull(float16_version, str(tmp_path / "gpu"), "tensorflow", gpu=True)
    pulled = _tree(tmp_path / "gpu")
    assert sorted(pulled) == ["_COMPLETE", "assets.extra/tf_serving_warmup_requests", "saved_model.pb",
                              "variables/variables.index"]
    assert pulled["saved_model.pb"] == b"half" * 80
    assert pulled["assets.extra/tf_serving_warmup_requests"] == b"half records"
    # The local marker describes the files as they lie, with their checksums, and names the variant.
    local = json.loads(pulled["_COMPLETE"])
    assert local["variant"] == manifest["variant"] == "gpu-float16"
    assert sorted(local["files"]) == sorted(p for p in pulled if p != "_COMPLETE")
    assert local["files"]["saved_model.pb"]["sha256"] == publish.sha256_file(str(tmp_path / "gpu" / "saved_model.pb"))


def test_pull_for_a_cpu_pod_never_copies_the_float16_savedmodel(float16_version, tmp_path):
    manifest = publish.pull(float16_version, str(tmp_path / "cpu"), "tensorflow")
    pulled = _tree(tmp_path / "cpu")
    assert not any(p.startswith("gpu-float16") for p in pulled) and "variant" not in manifest
    assert pulled["saved_model.pb"] == b"graph" * 100
    assert pulled["assets.extra/tf_serving_warmup_requests"] == b"records"


def test_pull_cli_accelerator_gpu(float16_version, tmp_path, capsys):
    from modeldeploy import cli

    assert cli.main(["pull", float16_version.uri, str(tmp_path / "gpu"), "--accelerator", "gpu"]) == 0
    assert "gpu-float16" in capsys.readouterr().out
    assert _tree(tmp_path / "gpu")["saved_model.pb"] == b"half" * 80
    # The default is a CPU pod's pull, as before the flag existed: every file as stored.
    assert cli.main(["pull", float16_version.uri, str(tmp_path / "all")]) == 0
    assert "gpu-float16/saved_model.pb" in _tree(tmp_path / "all")
    assert cli.main(["pull", float16_version.uri, str(tmp_path / "cpu"), "--runtime", "tensorflow",
                     "--accelerator", "cpu"]) == 0
    assert _tree(tmp_path / "cpu")["saved_model.pb"] == b"graph" * 100


def test_one_s3_factory_with_each_callers_endpoint_and_patience(monkeypatch):
    """The optimizer and pull take credentials and endpoint from their environment; the operator's own checks take
    the Secret's credentials but never its endpoint (a tenant must not point the operator's requests elsewhere)."""
    from modeldeploy.controller import published
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "job-key")
    fs = transfer.filesystem(parse_uri("s3://models/digits", "uri"))
    assert (fs.key, fs.client_kwargs["endpoint_url"], fs.retries) == ("job-key", "http://minio:9000", 1)
    assert fs.config_kwargs["read_timeout"] == 60
    fs = published._filesystem("s3", {"AWS_ACCESS_KEY_ID": "tenant", "AWS_ENDPOINT_URL": "http://evil"}, None)
    assert (fs.key, fs.client_kwargs, fs.config_kwargs["read_timeout"]) == ("tenant", {}, 10)
    assert published._filesystem("s3", {}, "http://store:9000").client_kwargs == {"endpoint_url": "http://store:9000"}
