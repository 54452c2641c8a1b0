"""Storage against the real local S3 server: publish, list, pull, overwrite rules, and error exit codes."""
import json
import os
import subprocess
import sys

import pytest

from modeldeploy.storage import publish, transfer
from modeldeploy.storage.errors import AlreadyPublished, NotPublished
from modeldeploy.storage.uris import parse_uri

pytestmark = pytest.mark.s3


@pytest.fixture
def model_dir(tmp_path):
    root = tmp_path / "model"
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"g" * 1000)
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(200_000))
    (root / "variables" / "variables.index").write_bytes(b"i" * 10)
    return str(root)


def _cli(*args, env=None, timeout=120):
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "modeldeploy.cli", *args], capture_output=True, text=True,
                          env=full, timeout=timeout)


def test_publish_list_pull_roundtrip(s3, s3_prefix, model_dir, tmp_path):
    output = parse_uri(s3.uri(s3_prefix + "/optimized"))
    publish.publish(model_dir, output, 1)
    publish.publish(model_dir, output, 2)
    keys = s3.keys(s3_prefix + "/")
    assert f"{s3_prefix}/optimized/2/_COMPLETE" in keys
    assert not any("/.tmp-" in k for k in keys), "temporary prefix left behind"
    assert publish.list_published(output) == [1, 2]
    marker = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=f"{s3_prefix}/optimized/2/_COMPLETE")["Body"].read())
    assert marker["files"]["variables/variables.data-00000-of-00001"]["size"] == 200_000

    dest = tmp_path / "serving" / "m" / "2"
    proc = _cli("pull", output.join("2").uri, str(dest))
    assert proc.returncode == 0, proc.stderr
    assert (dest / "variables" / "variables.data-00000-of-00001").read_bytes() == \
        open(os.path.join(model_dir, "variables", "variables.data-00000-of-00001"), "rb").read()


def test_overwrite_rules(s3, s3_prefix, model_dir):
    output = parse_uri(s3.uri(s3_prefix))
    publish.publish(model_dir, output, 7)
    with pytest.raises(AlreadyPublished):
        publish.publish(model_dir, output, 7)
    with open(os.path.join(model_dir, "saved_model.pb"), "wb") as fh:
        fh.write(b"v2")
    publish.publish(model_dir, output, 7, overwrite=True)
    assert transfer.read_bytes(output.join("7", "saved_model.pb")) == b"v2"


def test_version_without_marker_is_refused(s3, s3_prefix, model_dir, tmp_path):
    output = parse_uri(s3.uri(s3_prefix))
    # An interrupted publish: files copied, marker never written.
    transfer.upload_dir(model_dir, output.join("4"))
    assert publish.list_published(output) == []
    proc = _cli("pull", output.join("4").uri, str(tmp_path / "dest"))
    assert proc.returncode == NotPublished.exit_code, proc.stderr
    assert "_COMPLETE" in proc.stderr
    assert not (tmp_path / "dest").exists()


def test_pull_exit_codes_for_storage_problems(s3, s3_prefix, model_dir, tmp_path):
    output = parse_uri(s3.uri(s3_prefix))
    publish.publish(model_dir, output, 1)
    uri = output.join("1").uri
    dest = str(tmp_path / "dest")
    fast = {"MODELDEPLOY_STORAGE_ATTEMPTS": "2", "MODELDEPLOY_STORAGE_BASE_DELAY": "0.1",
            # botocore must not look for cloud metadata credentials (no such network here).
            "AWS_EC2_METADATA_DISABLED": "true"}
    wrong_secret = _cli("pull", uri, dest, env=dict(fast, AWS_SECRET_ACCESS_KEY="wrong"))
    assert wrong_secret.returncode == 4, wrong_secret.stderr
    assert "credentials" in wrong_secret.stderr

    no_creds = dict(os.environ, **fast)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        no_creds.pop(key, None)
    no_creds["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp_path / "none")
    no_creds["AWS_CONFIG_FILE"] = str(tmp_path / "none")
    proc = subprocess.run([sys.executable, "-m", "modeldeploy.cli", "pull", uri, dest], capture_output=True,
                          text=True, env=no_creds, timeout=120)
    assert proc.returncode == 4, proc.stderr

    unreachable = _cli("pull", uri, dest, env=dict(fast, AWS_ENDPOINT_URL="http://127.0.0.1:1"))
    assert unreachable.returncode == 3, unreachable.stderr
    assert "unreachable" in unreachable.stderr

    bad_uri = _cli("pull", "ftp://x/y", dest)
    assert bad_uri.returncode == 2 and "unsupported scheme" in bad_uri.stderr
    assert not os.path.exists(dest)


def test_pull_as_is_copies_a_saved_model_and_refuses_what_tf_serving_cannot_load(s3, s3_prefix, model_dir,
                                                                                    tmp_path):
    """Serving without optimization: the user's SavedModel directory, never published, is copied as it is."""
    base = s3.uri(s3_prefix + "/base")
    transfer.upload_dir(model_dir, parse_uri(base))
    proc = _cli("pull", base, str(tmp_path / "models" / "m" / "1"), "--as-is", env=s3.env)
    assert proc.returncode == 0, proc.stderr
    assert "pulled the SavedModel as it is (3 files)" in proc.stdout
    assert (tmp_path / "models" / "m" / "1" / "variables" / "variables.index").read_bytes() == b"i" * 10
    # Without --as-is the same location is refused: it was never published (no _COMPLETE marker).
    proc = _cli("pull", base, str(tmp_path / "other"), env=s3.env)
    assert proc.returncode == 10 and "no _COMPLETE marker" in proc.stderr
    # A Keras file, or a prefix without saved_model.pb, is not something TF Serving loads.
    s3.client.put_object(Bucket=s3.bucket, Key=f"{s3_prefix}/m.keras", Body=b"PK\x03\x04")
    proc = _cli("pull", s3.uri(s3_prefix + "/m.keras"), str(tmp_path / "k"), "--as-is", env=s3.env)
    assert proc.returncode == 10 and "not a SavedModel directory" in proc.stderr, proc.stderr
    proc = _cli("pull", s3.uri(s3_prefix + "/base/variables"), str(tmp_path / "v"), "--as-is", env=s3.env)
    assert proc.returncode == 10 and "no saved_model.pb" in proc.stderr, proc.stderr
    assert not (tmp_path / "v").exists() and not (tmp_path / "k").exists()


def test_one_writer_per_version_on_real_s3(s3, s3_prefix, model_dir, tmp_path):
    """The publication lock is a conditional write (If-None-Match: *) the S3 server itself enforces."""
    from modeldeploy.storage.errors import PublishInProgress
    output = parse_uri(s3.uri(s3_prefix))
    lock = output.join(".publishing-1")
    assert transfer.create_exclusive(lock, b"first") is True
    assert transfer.create_exclusive(lock, b"second") is False and transfer.read_bytes(lock) == b"first"
    transfer.remove(output, [lock.name])

    publish._acquire(output, 1, "job-a")
    with pytest.raises(PublishInProgress):
        publish.publish(model_dir, output, 1, writer="job-b")
    assert not [k for k in s3.keys(s3_prefix + "/") if k.startswith(f"{s3_prefix}/1/")]
    publish.publish(model_dir, output, 1, writer="job-a")            # the holder (its retry) goes on
    assert publish.list_published(output) == [1]
    assert s3.keys(s3_prefix + "/.publishing") == []                  # released
    with pytest.raises(AlreadyPublished):
        publish.publish(model_dir, output, 1, writer="job-b")
    assert _cli("pull", f"{output.uri}/1", str(tmp_path / "dest")).returncode == 0
