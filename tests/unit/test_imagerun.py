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
        imagerun.merge_env([], ["=x"])


def test_env_by_name_takes_the_callers_value(monkeypatch):
    """--env NAME (docker's -e NAME): the value comes from imagerun's own environment; an unset NAME is left out."""
    monkeypatch.setenv("SECRET_KEY", "s3cr3t")
    monkeypatch.delenv("UNSET_ONE", raising=False)
    env = imagerun.merge_env(["HOME=/tmp"], ["SECRET_KEY", "UNSET_ONE"])
    assert env["SECRET_KEY"] == "s3cr3t" and "UNSET_ONE" not in env


POD = {"securityContext": {"runAsUser": 65532, "runAsNonRoot": True, "fsGroup": 1000, "supplementalGroups": [7]},
       "containers": []}


def test_security_merges_pod_and_container_as_the_kubelet():
    c = {"name": "c", "securityContext": {"runAsUser": 1001, "readOnlyRootFilesystem": True}}
    sec = imagerun.security(POD, c)
    assert sec == {"uid": 1001, "gid": None, "fs_group": 1000, "groups": [7], "non_root": True, "read_only": True}
    assert imagerun.effective_user(sec, "65532:65532") == (1001, 1001)
    assert imagerun.effective_user(imagerun.security({}, {"name": "c"}), "65532:65532") == (65532, 65532)
    assert imagerun.effective_user(imagerun.security({}, {"name": "c"}), "") == (0, 0)
    assert imagerun.effective_user({**sec, "gid": 5}, "") == (1001, 5)


def test_pod_container_argv_keeps_secret_values_off_the_command_line(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    c = {"name": "c", "command": ["modeldeploy", "pull"], "args": ["s3://b/1", "/models/1"], "workingDir": "/w"}
    env = {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "PATH": "/opt/bin", "HOME": "/tmp"}
    sec = imagerun.security(POD, c)
    cmd = imagerun.pod_container_argv("operator", c, sec, (65532, 65532), env=env, volumes=["/h:/models"],
                                      hostname="pod-1")
    assert "s3cr3t" not in " ".join(cmd) and "AWS_SECRET_ACCESS_KEY" in cmd
    assert "PATH=/opt/bin" in cmd and "HOME=/tmp" in cmd
    assert cmd[cmd.index("--") + 1:] == ["operator", "s3://b/1", "/models/1"]
    assert [cmd[i + 1] for i, x in enumerate(cmd) if x == "--entrypoint"] == ["modeldeploy", "pull"]
    for flag, value in (("--user", "65532:65532"), ("--fs-group", "1000"), ("--group-add", "7"),
                        ("--workdir", "/w"), ("--hostname", "pod-1"), ("--volume", "/h:/models")):
        assert cmd[cmd.index(flag) + 1] == value
    assert "--read-only" not in cmd
    # The process's own environment carries the values; imagerun keeps its own PATH to find buildah.
    monkeypatch.setenv("MD_IMAGE_STORE", "/store")
    monkeypatch.setenv("HOME", "/root")
    monkeypatch.delenv("MD_CACHE", raising=False)
    assert imagerun.process_env(env) == {"PATH": "/usr/bin:/bin", "HOME": "/root", "MD_IMAGE_STORE": "/store",
                                         "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    # Without command the image's ENTRYPOINT stays and args replace its CMD.
    bare = imagerun.pod_container_argv("operator", {"name": "c", "args": ["run"]}, sec, (1, 1), env={}, volumes=[])
    assert "--entrypoint" not in bare and bare[-2:] == ["operator", "run"]


def test_argv_round_trips_through_the_cli_parser(monkeypatch):
    cmd = imagerun.argv("optimizer", ["optimize", "--help"], entrypoint=["modeldeploy"], user="65532:65532",
                        fs_group=65532, env=["A=1"], volumes=["/x:/tmp"], read_only=True, workdir="/tmp")
    assert cmd[1].endswith("hack/imagerun.py")
    assert cmd[cmd.index("--") + 1:] == ["optimizer", "optimize", "--help"]
    for flag in ("--read-only", "--fs-group", "--entrypoint", "--user", "--env", "--volume", "--workdir"):
        assert flag in cmd


def test_in_root_resolves_symlinks_inside_the_image(tmp_path):
    """Debian's /var/run -> /run: a mount at /var/run/secrets/... lands in the image's /run; no link or ".."
    leaves the root."""
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("/run")
    (root / "up").symlink_to("../../../etc")
    (root / "rel").symlink_to("run/x")
    r = str(root)
    assert imagerun.in_root(r, "/var/run/secrets/kubernetes.io/serviceaccount") == \
        f"{r}/run/secrets/kubernetes.io/serviceaccount"
    assert imagerun.in_root(r, "/up/passwd") == f"{r}/etc/passwd"
    assert imagerun.in_root(r, "/../../tmp") == f"{r}/tmp"
    assert imagerun.in_root(r, "/rel/y") == f"{r}/run/x/y"
    (root / "loop").symlink_to("/loop")
    with pytest.raises(SystemExit, match="symlinks"):
        imagerun.in_root(r, "/loop/x")
