"""URI parsing: every scheme maps to the right fsspec protocol and path; bad URIs name the flag."""
import pytest

from modeldeploy.storage.errors import BadArguments
from modeldeploy.storage.uris import Location, parse_uri


@pytest.mark.parametrize("uri, protocol, path", [
    ("s3://models/digits/base", "s3", "models/digits/base"),
    ("s3://models/digits/base/", "s3", "models/digits/base"),
    ("s3://models", "s3", "models"),
    ("gs://bucket/a/b.keras", "gs", "bucket/a/b.keras"),
    ("S3://models/x", "s3", "models/x"),
    ("file:///data/model.keras", "file", "/data/model.keras"),
    ("file:///data/dir/", "file", "/data/dir"),
    ("pvc://claim/digits/1", "file", "/mnt/pvc/claim/digits/1"),
    ("pvc://claim", "file", "/mnt/pvc/claim"),
])
def test_parse(uri, protocol, path, monkeypatch):
    monkeypatch.delenv("MODELDEPLOY_PVC_ROOT", raising=False)
    loc = parse_uri(uri)
    assert (loc.protocol, loc.path) == (protocol, path)
    assert loc.uri == uri


def test_pvc_root_from_env(monkeypatch):
    monkeypatch.setenv("MODELDEPLOY_PVC_ROOT", "/srv/volumes")
    assert parse_uri("pvc://models/digits/3").path == "/srv/volumes/models/digits/3"


def test_plain_path_is_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loc = parse_uri("model.keras")
    assert loc == Location(uri="model.keras", protocol="file", path=str(tmp_path / "model.keras"))


@pytest.mark.parametrize("uri, words", [
    ("", ["--source", "required"]),
    ("http://host/model", ["--source", "unsupported scheme", "s3://"]),
    ("s3:///key", ["--source", "no bucket"]),
    ("pvc:///x", ["--source", "no claim"]),
    ("file://relative/path", ["--source", "absolute"]),
    ("s3://b/../etc", ["--source", ".."]),
    ("pvc://claim/../../etc/passwd", ["--source", ".."]),
])
def test_bad_uris_name_the_flag(uri, words):
    with pytest.raises(BadArguments) as err:
        parse_uri(uri, "--source")
    assert err.value.exit_code == 2
    for word in words:
        assert word in err.value.message


def test_join_and_name():
    loc = parse_uri("s3://models/digits/optimized")
    child = loc.join("3", "/saved_model.pb")
    assert child.uri == "s3://models/digits/optimized/3/saved_model.pb"
    assert child.path == "models/digits/optimized/3/saved_model.pb"
    assert child.name == "saved_model.pb"
    assert loc.join() == loc
