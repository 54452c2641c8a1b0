"""The images, built by `make images` and run without a cluster: their user, read-only root and contents, and
the containers of the pods the operator builds run inside them.

The session fixture runs hack/images.sh (a no-op in seconds when the image cache is warm; a first build takes
minutes, see README "Images"). Each container runs through hack/imagerun.py: the image's root filesystem,
read-only where the pod asks for it, as the pod's user, with the pod's environment and with volumes as bind
mounts. The optimizer Job's container and the serving pod's `modeldeploy pull` init container are taken from
the builders (build_job, build_deployment) as the operator makes them, with file:// storage bind-mounted in.

Needs root (buildah, mounts, chroot), as a container runtime does; no cluster, no S3.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from modeldeploy.api import spec as specmod
from modeldeploy.resources.common import SERVING_UID, TOOL_UID, OperatorImages
from modeldeploy.resources.deployment import ServingTarget, build_deployment
from modeldeploy.resources.job import build_job

REPO = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("imagerun", REPO / "hack" / "imagerun.py")
imagerun = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(imagerun)

pytestmark = [pytest.mark.images, pytest.mark.timeout(2400)]
OPERATOR, OPTIMIZER = imagerun.image_ref("operator"), imagerun.image_ref("optimizer")
SITE = "/opt/modeldeploy/lib/python3.11/site-packages"

# Trains the digits CNN for two epochs (the demo's trainer) and writes digits.keras and digits.npz to argv[1].
TRAIN = """
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("train_digits", sys.argv[2])
train_digits = importlib.util.module_from_spec(spec); spec.loader.exec_module(train_digits)
import tf_keras as keras
keras.utils.set_random_seed(0)
x_train, y_train, x_val, y_val = train_digits.digits_arrays()
model = train_digits.build_model()
model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
model.save(sys.argv[1] + "/digits.keras")
np.savez(sys.argv[1] + "/digits.npz", x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)
"""


@pytest.fixture(scope="session")
def images() -> str:
    """`make images` (hack/images.sh): both images in buildah's store; returns its output (sizes)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("building and running the images without a daemon needs root on Linux (buildah, mounts)")
    proc = subprocess.run(["bash", str(REPO / "hack" / "images.sh")], cwd=REPO, capture_output=True, text=True,
                          timeout=2400, env=dict(os.environ, TARGETS="operator optimizer"))
    assert proc.returncode == 0, f"make images failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}"
    return proc.stdout


def run_in(image: str, args: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(imagerun.argv(image, args, **kw), capture_output=True, text=True, timeout=timeout)
    print(f"$ imagerun {image} {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return proc


def sh(image: str, script: str, **kw) -> subprocess.CompletedProcess:
    return run_in(image, ["-c", script], entrypoint=["sh"], **kw)


def pod_container(image: str, pod_spec: dict, container: dict, volume_dirs: dict[str, pathlib.Path],
                  extra_volumes: list[str], env: dict[str, str], termination_log: pathlib.Path | None = None):
    """imagerun's command line for one container of a pod spec, as the local cluster's runner builds it
    (imagerun.pod_container_argv): command and args, the pod's user/groups under the container's overrides,
    readOnlyRootFilesystem, its env (values given for valueFrom entries in `env`), its volumeMounts from
    `volume_dirs` and the termination-message file. Returns ((argv, env), security, (uid, gid))."""
    sec = imagerun.security(pod_spec, container)
    user = imagerun.effective_user(sec, imagerun.local_image(image)["config"].get("User", ""))
    values = {e["name"]: e["value"] if "value" in e else env[e["name"]] for e in container.get("env", [])}
    assert not [e for e in container.get("envFrom", [])], "no Secrets in these tests"
    volumes = [f"{volume_dirs[m['name']]}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}"
               for m in container.get("volumeMounts", [])] + extra_volumes
    if termination_log is not None:
        termination_log.touch()
        os.chown(termination_log, *user)
        volumes.append(f"{termination_log}:{container.get('terminationMessagePath', '/dev/termination-log')}")
    expanded = {**container, "args": [a.replace("$$", "$") for a in container.get("args", [])]}
    argv = imagerun.pod_container_argv(image, expanded, sec, user, env=values, volumes=volumes)
    return (argv, imagerun.process_env(values)), sec, user


def run_pod_container(command: tuple[list[str], dict], timeout: float = 120) -> subprocess.CompletedProcess:
    argv, env = command
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(argv)} -> {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return proc


def md_spec() -> specmod.ModelDeploymentSpec:
    return specmod.parse({
        "apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": "ml"},
        "spec": {"model": {"uri": "file:///data/digits.keras", "version": 1},
                 "optimization": {"quantization": {"mode": "int8"}, "dataset": {"uri": "file:///data/digits.npz"},
                                  "gates": {"maxAccuracyDrop": 0.05}, "outputUri": "file:///store/digits"}}})


def test_operator_help_as_non_root_on_a_read_only_root(images):
    proc = run_in(OPERATOR, ["--help"], user=f"{TOOL_UID}:{TOOL_UID}", read_only=True)
    assert proc.returncode == 0
    for command in ("run", "optimize", "pull", "render"):
        assert command in proc.stdout


@pytest.mark.parametrize("image", [OPERATOR, OPTIMIZER])
def test_user_and_read_only_root(images, image, tmp_path):
    """Without --user the image's USER applies (the Dockerfile's 65532); a read-only root refuses writes outside
    the volumes, a writable volume takes them, and the process has no capabilities."""
    work = tmp_path / "work"
    work.mkdir()
    proc = sh(image, "id -u; id -g; grep CapEff /proc/self/status; "
                     "if touch /tmp/x 2>/dev/null; then echo root-writable; fi; echo ok > /work/written",
              read_only=True, volumes=[f"{work}:/work"], fs_group=TOOL_UID)
    assert proc.returncode == 0
    lines = proc.stdout.split("\n")
    assert lines[:2] == [str(TOOL_UID), str(TOOL_UID)]
    assert "CapEff:\t0000000000000000" in proc.stdout
    assert "root-writable" not in proc.stdout
    assert (work / "written").read_text() == "ok\n"
    assert (work / "written").stat().st_uid == TOOL_UID
    # With a writable root the write lands in the run's own working container, gone with it.
    assert "root-writable" in sh(image, "touch /tmp/x && echo root-writable").stdout
    assert "root-writable" not in sh(image, "ls /tmp/x 2>/dev/null && echo root-writable").stdout


@pytest.mark.parametrize("image", [OPERATOR, OPTIMIZER])
def test_images_hold_no_build_tools_caches_or_test_code(images, image):
    proc = sh(image, f"""
        python -m pip --version >/dev/null 2>&1 && echo has-pip
        for tool in gcc cc make git; do command -v $tool >/dev/null && echo has-$tool; done
        for d in /src /root/.cache /tmp/pip /opt/modeldeploy/tests /tests; do [ -e $d ] && echo has-$d; done
        find {SITE} -type d -name tests | head -3 | sed 's/^/has-tests /'
        [ -e {SITE}/tensorflow/include ] && echo has-tensorflow-headers
        modeldeploy version
        python -c "import modeldeploy, sys; print(modeldeploy.__file__); print(sys.version_info[:2])"
        """, read_only=True)
    assert proc.returncode == 0
    assert "has-" not in proc.stdout, proc.stdout
    assert f"{SITE}/modeldeploy/__init__.py" in proc.stdout
    assert "(3, 11)" in proc.stdout


def test_operator_image_has_no_tensorflow(images):
    proc = sh(OPERATOR, "python -c 'import tensorflow' 2>&1 | tail -1", read_only=True)
    assert "No module named 'tensorflow'" in proc.stdout


@pytest.fixture(scope="module")
def optimized(images, tmp_path_factory):
    """The optimizer Job's container (build_job) run in the optimizer image on file:// storage: a digits CNN in
    a read-only /data, the published version in /store. Returns the paths and the process."""
    base = tmp_path_factory.mktemp("images")
    data, store, work = base / "data", base / "store", base / "work"
    for d in (data, store, work):
        d.mkdir()
    subprocess.run([sys.executable, "-c", TRAIN, str(data), str(REPO / "hack" / "train_digits.py")], check=True,
                   timeout=300, env=dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2"))
    # The store is a volume of the optimizer's user (a PVC it may write, say); the Job itself asks for nothing else.
    os.chown(store, TOOL_UID, TOOL_UID)
    job = build_job(md_spec(), images=OperatorImages(optimizer=OPTIMIZER, pull=OPERATOR))
    pod = job["spec"]["template"]["spec"]
    container, = pod["containers"]
    assert container["image"] == OPTIMIZER
    command, sec, user = pod_container(OPTIMIZER, pod, container, {"work": work},
                                    [f"{data}:/data:ro", f"{store}:/store"],
                                    {"MODELDEPLOY_WRITER_ID": "digits-opt-1-test"},
                                    termination_log=base / "termination-log")
    assert sec["read_only"] and user == (TOOL_UID, TOOL_UID)
    proc = run_pod_container(command, timeout=900)
    return {"base": base, "store": store, "work": work, "proc": proc, "termination": base / "termination-log"}


def test_optimizer_job_container_publishes_from_the_image(optimized):
    proc = optimized["proc"]
    assert proc.returncode == 0, proc.stderr[-4000:]
    version = optimized["store"] / "digits" / "1"
    assert (version / "_COMPLETE").is_file()
    assert any(version.rglob("saved_model.pb"))
    owners = {p.stat().st_uid for p in version.rglob("*")}
    assert owners == {TOOL_UID}, f"published files owned by {owners}, not the image's user {TOOL_UID}"
    message = json.loads(optimized["termination"].read_text())
    assert message, "the termination message is empty"


def test_pull_init_container_from_the_operator_image(optimized, tmp_path):
    """The serving pod's init container (build_deployment) pulls the published version in the operator image,
    as 65532 in the pod's fsGroup, so that TF Serving's user (SERVING_UID, same group) reads what it wrote."""
    assert optimized["proc"].returncode == 0, "the optimizer run failed (see the test above)"
    models, tmp = tmp_path / "models", tmp_path / "tmp"
    models.mkdir()
    tmp.mkdir()
    deployment = build_deployment(md_spec(), ServingTarget(version=1, image="tensorflow/serving:2.20.0",
                                                           uri="file:///store/digits/1"),
                                  images=OperatorImages(optimizer=OPTIMIZER, pull=OPERATOR))
    pod = deployment["spec"]["template"]["spec"]
    init, = pod["initContainers"]
    assert init["image"] == OPERATOR
    command, sec, user = pod_container(OPERATOR, pod, init, {"models": models, "tmp": tmp},
                                    [f"{optimized['store']}:/store:ro"], {})
    assert sec["read_only"] and user == (TOOL_UID, TOOL_UID) and sec["fs_group"] == SERVING_UID
    proc = run_pod_container(command)
    assert proc.returncode == 0
    pulled = models / "digits" / "1"
    assert (pulled / "saved_model.pb").is_file()
    for p in pulled.rglob("*"):
        st = p.stat()
        assert st.st_uid == TOOL_UID and st.st_gid == SERVING_UID, f"{p}: {st.st_uid}:{st.st_gid}"
        assert st.st_mode & 0o040, f"{p} is not readable by the group TF Serving runs in"


def test_a_failing_command_fails(images, tmp_path):
    """The exit code is the command's: a missing model makes `modeldeploy pull` fail in the image too."""
    out = tmp_path / "out"
    out.mkdir()
    proc = run_in(OPERATOR, ["pull", "file:///nowhere/1", "/out/1"], entrypoint=["modeldeploy"],
                  user=f"{TOOL_UID}:{TOOL_UID}", volumes=[f"{out}:/out"], fs_group=TOOL_UID, read_only=True)
    assert proc.returncode not in (0, 125, 126, 127)
    assert not any(out.iterdir())
