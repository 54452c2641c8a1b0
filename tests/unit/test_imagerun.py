"""hack/imagerun.py's pure parts: options to the command line and back, volumes, users, the environment.
Running commands in images is tested in tests/integration/test_images.py (root, built images)."""
from __future__ import annotations

import importlib.util
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("imagerun", REPO / "hack" / "imagerun.py")
imagerun = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(imagerun)


def test_image_ref_names_targets_like_images_sh(monkeypatch):
    monkeypatch.delenv("IMAGE_REPO", raising=False)
    version = __import__("modeldeploy").__version__
    assert imagerun.image_ref("optimizer") == f"ghcr.io/modeldeploy/optimizer:{version}"
    monkeypatch.setenv("IMAGE_REPO", "reg.local/ml")
    assert imagerun.image_ref("operator") == f"reg.local/ml/operator:{version}"
    assert imagerun.image_ref("localhost/x:1") == "localhost/x:1"


def test_store_follows_md_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("MD_IMAGE_STORE", raising=False)
    monkeypatch.setenv("MD_CACHE", str(tmp_path))
    assert imagerun.store() == tmp_path / "containers"
    monkeypatch.setenv("MD_IMAGE_STORE", "/elsewhere")
    assert str(imagerun.store()) == "/elsewhere"


def test_volumes(tmp_path):
    assert imagerun.parse_volume(f"{tmp_path}:/data:ro") == {"host": str(tmp_path), "path": "/data", "ro": True}
    assert imagerun.parse_volume(f"{tmp_path}:/data/") == {"host": str(tmp_path), "path": "/data", "ro": False}
    for bad in (f"{tmp_path}:data", f"{tmp_path}:/data:rx", f"{tmp_path}", f"{tmp_path}/missing:/data"):
        with pytest.raises(SystemExit):
            imagerun.parse_volume(bad)


def test_users():
    assert imagerun.parse_user("65532:65532") == (65532, 65532)
    assert imagerun.parse_user("1000") == (1000, None)
    with pytest.raises(SystemExit, match="numeric"):
        imagerun.parse_user("modeldeploy")


def test_environment_is_the_images_overlaid_by_the_given():
    env = imagerun.merge_env(["PATH=/opt/modeldeploy/bin:/usr/bin", "HOME=/root", "EMPTY="],
                             ["HOME=/tmp", "X=a=b"])
    assert env == {"PATH": "/opt/modeldeploy/bin:/usr/bin", "HOME": "/tmp", "EMPTY": "", "X": "a=b"}
    assert imagerun.merge_env([], [])["PATH"].startswith("/usr/local/sbin")
    with pytest.raises(SystemExit):
        imagerun.merge_env([], ["NOVALUE"])


def test_argv_round_trips_through_the_cli_parser(monkeypatch):
    cmd = imagerun.argv("optimizer", ["optimize", "--help"], entrypoint=["modeldeploy"], user="65532:65532",
                        fs_group=65532, env=["A=1"], volumes=["/x:/tmp"], read_only=True, workdir="/tmp")
    assert cmd[1].endswith("hack/imagerun.py")
    assert cmd[cmd.index("--") + 1:] == ["optimizer", "optimize", "--help"]
    for flag in ("--read-only", "--fs-group", "--entrypoint", "--user", "--env", "--volume", "--workdir"):
        assert flag in cmd
