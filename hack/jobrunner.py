#!/usr/bin/env python3
"""Job runner for the local kwok cluster: really runs the pods of optimizer Jobs, as a kubelet would.

kwok fakes pod status but executes nothing. Pods labelled ``app.kubernetes.io/component=optimizer`` (which the
kwok stages in hack/kwok/stages/pod.yaml leave alone) are run here instead, once the scheduler has bound them to
a node:

* With ``--images`` (``make test`` and ``make demo`` as root), a container whose image ``make images`` built runs
  inside that image (hack/imagerun.py): its root filesystem, read-only when readOnlyRootFilesystem, as the pod's
  runAsUser/runAsGroup/fsGroup (runAsNonRoot with a root user is refused as the kubelet refuses it), ENTRYPOINT
  and CMD unless command/args replace them, volumes and the termination-message file bind-mounted at their
  paths; containerStatuses[].imageID is then the image's id (empty for a played container). Secret values
  reach it through the environment, never a command line.
* Otherwise each container's ``command`` + ``args`` run as a local process; the project's virtualenv plays the
  image (``PATH`` starts with ``<repo>/.venv/bin``, or ``$MD_VENV/bin``). ``$(VAR)`` references are expanded as the kubelet does. A container
  without ``command`` fails with reason StartError: the runner cannot read an image's entrypoint.
* The environment is the container's ``envFrom`` and ``env`` only (plus PATH, HOME, TMPDIR, HOSTNAME and the
  KUBERNETES_SERVICE_* variables), with ``secretKeyRef``/``configMapKeyRef``/``fieldRef`` resolved through the
  API. A missing non-optional Secret or key leaves the pod Pending with CreateContainerConfigError and is
  retried, like the kubelet does.
* Volumes become directories under ``.cluster/pods/<namespace>_<pod>/volumes/<volume>/`` (emptyDir, hostPath
  and unknown types empty; secret, configMap and projected volumes filled with their files; a
  persistentVolumeClaim maps to ``.cluster/pvc/<namespace>/<claim>/`` so it outlives the pod). A process cannot
  see them at their ``mountPath``, so every occurrence of a mount path (as a whole path prefix) in command,
  args, env values and workingDir is rewritten to the directory; the same goes for ``terminationMessagePath``
  (default /dev/termination-log), which maps to ``.cluster/pods/<ns>_<pod>/<container>.termination-log``.
  So product code should take such paths from its arguments or environment, never hard-code them.
* Output goes to ``.cluster/pods/<ns>_<pod>/<container>.log``.
* The pod status is written through the pods/status subresource: phase Running with the containers running,
  then Succeeded or Failed with ``containerStatuses[].state.terminated`` (exitCode, reason Completed or Error,
  the termination message -- at most 4096 bytes -- or, with FallbackToLogsOnError, the log's tail). The real
  Job controller then completes, retries or fails the Job. restartPolicy OnFailure restarts a failed
  container in place (restartCount, back-off). A pod's own activeDeadlineSeconds is enforced (reason
  DeadlineExceeded); a pod being deleted (Job deleted, Job deadline exceeded, ...) gets SIGTERM, then SIGKILL
  after its grace period.
* At most ``--parallel`` pods run at once; the others wait, Pending, in arrival order.
* With ``--kubelet-port-base``, each runner node serves the kubelet's ``/metrics/resource`` over HTTPS on
  127.0.0.1 (hack/kubeletstats.py: its containers' CPU and memory measured from /proc), and its node status
  names that port (daemonEndpoints.kubeletEndpoint.Port), so metrics-server feeds the HPA real usage.

Run by hack/cluster-up.sh (log .cluster/logs/jobrunner.log); stopped by hack/cluster-down.sh.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import json
import logging
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import imagerun  # noqa: E402  (beside this file: runs a container inside a locally built image)
import kubeletstats  # noqa: E402  (beside this file: the runner nodes' resource-metrics endpoint)
import podrunner  # noqa: E402  (beside this file: the serving-pod half of the runner)
from podrunner import now, parse_quantity  # noqa: E402,F401  (parse_quantity: tests/unit/test_jobrunner.py)

SELECTOR = "app.kubernetes.io/component=optimizer"
MESSAGE_LIMIT = 4096              # the kubelet's limit for a termination message
FALLBACK_LOG_BYTES, FALLBACK_LOG_LINES = 2048, 80   # FallbackToLogsOnError takes at most this much log
RETRY_CONFIG_ERROR_SECONDS = 5
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

log = logging.getLogger("jobrunner")


class ConfigError(Exception):
    """The container cannot be configured yet (missing Secret/ConfigMap/key): retry later."""


# --- pure helpers ----------------------------------------------------------------------------------------


def expand(value: str, env: dict) -> str:
    """Expand $(VAR) references the way the kubelet does: $$ escapes, unknown references stay as they are."""
    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", repl, value)


def path_rewriter(mapping: dict):
    """Return f(str) that replaces each container path in `mapping` by its host path.

    A path matches only as a whole path prefix: "/data" matches "/data" and "/data/x" but not "/database" or
    "/x/data". Longer paths win, so nested mounts map correctly.
    """
    if not mapping:
        return lambda s: s
    paths = sorted(mapping, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![\w./-])(" + "|".join(re.escape(p.rstrip("/") or "/") for p in paths) + r")(?=/|$|[^\w.-])")
    table = {p.rstrip("/") or "/": h for p, h in mapping.items()}
    return lambda s: pattern.sub(lambda m: table[m.group(1)], s)


def container_status(c: dict, restarts: int = 0) -> dict:
    """The fields of a containerStatus every state shares. imageID names the local image the container ran in
    (sha256:<id>, as a kubelet reports it); empty when the runner played it with host processes."""
    return {"name": c["name"], "image": c.get("image", ""), "imageID": c.get("image_id", ""), "containerID": "",
            "ready": False, "started": False, "restartCount": restarts}


def read_message(path: pathlib.Path, log_path: pathlib.Path, policy: str, exit_code: int) -> str:
    """The termination message as the kubelet reports it."""
    message = ""
    if path.is_file():
        with open(path, "rb") as f:
            message = f.read(MESSAGE_LIMIT).decode("utf-8", "replace")
    if not message and exit_code != 0 and policy == "FallbackToLogsOnError" and log_path.is_file():
        data = log_path.read_bytes()[-FALLBACK_LOG_BYTES:]
        message = b"\n".join(data.splitlines()[-FALLBACK_LOG_LINES:]).decode("utf-8", "replace")
    return message


# --- one pod ---------------------------------------------------------------------------------------------


class PodRun:
    """Runs one pod: materialises its volumes, resolves its environment, runs its containers, reports status."""

    def __init__(self, runner: "Runner", pod: dict):
        self.runner, self.api = runner, runner.api
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = runner.state / "pods" / f"{self.ns}_{self.name}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stopping: str | None = None      # why we are killing the processes (deleted / deadline)
        self.started_at: str | None = None
        self.pod_ip = "127.0.0.1"             # runner-node pods get their own (hack/podrunner.py)

    # -- API reads --
    def _secret(self, name: str) -> dict:
        try:
            s = self.api.read_namespaced_secret(name, self.ns)
        except ApiException as e:
            if e.status == 404:
                raise ConfigError(f'secret "{name}" not found') from None
            raise
        return {k: base64.b64decode(v) for k, v in (s.data or {}).items()}

    def _configmap(self, name: str) -> dict:
        try:
            c = self.api.read_namespaced_config_map(name, self.ns)
        except ApiException as e:
            if e.status == 404:
                raise ConfigError(f'configmap "{name}" not found') from None
            raise
        data = {k: v.encode() for k, v in (c.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (c.binary_data or {}).items()})
        return data

    def _source(self, kind: str, name: str, optional: bool) -> dict:
        try:
            return self._secret(name) if kind == "secret" else self._configmap(name)
        except ConfigError:
            if optional:
                return {}
            raise

    def _field(self, path: str) -> str:
        meta, spec, status = self.pod["metadata"], self.pod["spec"], self.pod.get("status") or {}
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        values = {
            "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.hostIP": status.get("hostIP", "127.0.0.1"), "status.podIP": self.pod_ip,
            "status.podIPs": self.pod_ip, "status.hostIPs": status.get("hostIP", "127.0.0.1"),
        }
        if path not in values:
            raise ConfigError(f"unsupported fieldRef {path!r}")
        return values[path]

    def _resource(self, container: dict, ref: dict) -> str:
        resource = ref["resource"]                      # e.g. limits.cpu, requests.memory
        kind, _, what = resource.partition(".")
        value = ((container.get("resources") or {}).get(kind) or {}).get(what)
        if value is None:                               # the kubelet falls back to node allocatable; use 0
            return "0"
        divisor = parse_quantity(ref.get("divisor") or "1")
        return str(math.ceil(parse_quantity(value) / divisor))

    # -- volumes --
    def _files(self, dest: pathlib.Path, data: dict, items: list | None, mode: int = 0o644):
        selected = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
        for key, rel in selected.items():
            if key not in data:
                raise ConfigError(f'key "{key}" not found')
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[key])
            target.chmod(mode)

    def _token(self, sa: str, audience: str | None, seconds: int) -> bytes:
        spec = {"expirationSeconds": max(seconds, 600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}}
        if audience:
            spec["audiences"] = [audience]
        tr = self.api.create_namespaced_service_account_token(sa, self.ns, {"spec": spec})
        return tr.status.token.encode()

    def _token_owner(self, path: pathlib.Path):
        """A projected token is readable by the pod's containers as the kubelet arranges it: owned by their
        runAsUser when all run as one (0600), else by the fsGroup (0640)."""
        if not self.runner.images:        # host processes run as the runner's user: nothing to give away
            return
        users = {imagerun.security(self.pod["spec"], c)["uid"]
                 for c in self.pod["spec"]["containers"] + (self.pod["spec"].get("initContainers") or [])}
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        if len(users) == 1 and None not in users:
            os.chown(path, users.pop(), -1)
        elif fs_group is not None:
            os.chown(path, -1, fs_group)
            path.chmod(0o640)

    def _volumes(self) -> dict:
        """Create a directory for every volume; return {volume name: host dir}."""
        dirs = {}
        for vol in self.pod["spec"].get("volumes") or []:
            name = vol["name"]
            host = self.dir / "volumes" / name
            if "persistentVolumeClaim" in vol:
                host = self.runner.state / "pvc" / self.ns / vol["persistentVolumeClaim"]["claimName"]
            host.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in vol:
                host.chmod(0o777)          # as the kubelet makes it: writable whatever user the containers run as
            if "secret" in vol:
                s = vol["secret"]
                self._files(host, self._source("secret", s["secretName"], s.get("optional", False)), s.get("items"))
            elif "configMap" in vol:
                c = vol["configMap"]
                self._files(host, self._source("configmap", c["name"], c.get("optional", False)), c.get("items"))
            elif "projected" in vol:
                for src in vol["projected"].get("sources") or []:
                    if "secret" in src:
                        s = src["secret"]
                        self._files(host, self._source("secret", s["name"], s.get("optional", False)), s.get("items"))
                    elif "configMap" in src:
                        c = src["configMap"]
                        self._files(host, self._source("configmap", c["name"], c.get("optional", False)),
                                    c.get("items"))
                    elif "serviceAccountToken" in src:
                        t = src["serviceAccountToken"]
                        sa = self.pod["spec"].get("serviceAccountName") or "default"
                        token = self._token(sa, t.get("audience"), t.get("expirationSeconds", 3600))
                        self._files(host, {"token": token}, [{"key": "token", "path": t["path"]}], 0o600)
                        self._token_owner(host / t["path"])
                    elif "downwardAPI" in src:
                        data = {i["path"]: self._field(i["fieldRef"]["fieldPath"]).encode()
                                for i in src["downwardAPI"].get("items") or [] if "fieldRef" in i}
                        self._files(host, data, None)
            elif "downwardAPI" in vol:
                data = {i["path"]: self._field(i["fieldRef"]["fieldPath"]).encode()
                        for i in vol["downwardAPI"].get("items") or [] if "fieldRef" in i}
                self._files(host, data, None)
            dirs[name] = host
        return dirs

    # -- containers --
    def _env(self, container: dict) -> dict:
        """Resolve envFrom then env (later wins), expanding $(VAR) against what is defined so far."""
        env: dict[str, str] = {}
        for src in container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind in ("secretRef", "configMapRef"):
                if kind in src:
                    ref = src[kind]
                    data = self._source("secret" if kind == "secretRef" else "configmap", ref["name"],
                                        ref.get("optional", False))
                    env.update({prefix + k: v.decode("utf-8", "replace") for k, v in data.items()})
        for var in container.get("env") or []:
            name, value_from = var["name"], var.get("valueFrom")
            if not value_from:
                env[name] = expand(var.get("value", ""), env)
                continue
            for kind in ("secretKeyRef", "configMapKeyRef"):
                if kind in value_from:
                    ref = value_from[kind]
                    data = self._source("secret" if kind == "secretKeyRef" else "configmap", ref["name"],
                                        ref.get("optional", False))
                    if ref["key"] in data:
                        env[name] = data[ref["key"]].decode("utf-8", "replace")
                    elif not ref.get("optional", False):
                        raise ConfigError(f'couldn\'t find key {ref["key"]} in {kind[:-6]} {self.ns}/{ref["name"]}')
            if "fieldRef" in value_from:
                env[name] = self._field(value_from["fieldRef"]["fieldPath"])
            if "resourceFieldRef" in value_from:
                env[name] = self._resource(container, value_from["resourceFieldRef"])
        return env

    def _mounts(self, container: dict, volumes: dict) -> dict:
        """{mountPath: (host path, readOnly)} of the container's volumeMounts."""
        mounts = {}
        for mount in container.get("volumeMounts") or []:
            host = volumes.get(mount["name"])
            if host is None:
                raise ConfigError(f'volume "{mount["name"]}" not found')
            if mount.get("subPath"):
                host = host / mount["subPath"]
                host.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = (str(host), bool(mount.get("readOnly")))
        return mounts

    def _prepare(self, container: dict, volumes: dict, extra_env: dict | None = None,
                 program: list[str] | None = None) -> dict:
        """Everything needed to start one container: argv, env, cwd, log and termination-message paths.
        `program` (host paths, not mapped) goes before the container's command: an image entrypoint we play.
        A container whose image is built locally runs inside it instead (`_prepare_in_image`)."""
        image = self.runner.local_image(container.get("image", ""))
        if image:
            return self._prepare_in_image(container, volumes, extra_env, image)
        cname = container["name"]
        mapping = {path: host for path, (host, _) in self._mounts(container, volumes).items()}
        term = self.dir / f"{cname}.termination-log"
        term.unlink(missing_ok=True)
        mapping[container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH] = str(term)
        rewrite = path_rewriter(mapping)

        env = {k: rewrite(v) for k, v in self._env(container).items()}
        home, tmp = self.dir / "home", self.dir / "tmp"
        home.mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
        venv_bin = str(self.runner.venv / "bin")
        base = {
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmp),
            "HOSTNAME": self.name, "LANG": "C.UTF-8", "VIRTUAL_ENV": str(self.runner.venv),
            "KUBERNETES_SERVICE_HOST": self.runner.api_host, "KUBERNETES_SERVICE_PORT": self.runner.api_port,
        }
        full_env = {**base, **(extra_env or {}), **env}
        argv = list(program or []) + [rewrite(expand(a, full_env))
                                      for a in (container.get("command") or []) + (container.get("args") or [])]
        cwd = self.dir / "rootfs"
        if container.get("workingDir"):
            wd = rewrite(container["workingDir"])
            cwd = pathlib.Path(wd) if wd != container["workingDir"] else cwd / wd.lstrip("/")
        cwd.mkdir(parents=True, exist_ok=True)
        return {"name": cname, "image": container.get("image", ""), "image_id": "", "argv": argv, "env": full_env,
                "cwd": str(cwd), "log": self.dir / f"{cname}.log", "term": term,
                "has_command": bool(container.get("command")),
                "policy": container.get("terminationMessagePolicy") or "File"}

    def _prepare_in_image(self, container: dict, volumes: dict, extra_env: dict | None, image: dict) -> dict:
        """A container in its locally built image (hack/imagerun.py): the image's root filesystem (read-only when
        readOnlyRootFilesystem), ENTRYPOINT/CMD unless command/args replace them, its ENV under the container's
        env, the pod's user and groups, the volumes and the termination-message file bind-mounted at their
        paths (nothing rewritten). runAsNonRoot with a root user is refused as the kubelet refuses it."""
        cname = container["name"]
        sec = imagerun.security(self.pod["spec"], container)
        user = imagerun.effective_user(sec, image["config"].get("User", ""))
        if sec["non_root"] and user[0] == 0:
            raise ConfigError(f"container {cname} has runAsNonRoot and image will run as root")
        volume_args = [f"{host}:{path}{':ro' if ro else ''}"
                       for path, (host, ro) in self._mounts(container, volumes).items()]
        term = self.dir / f"{cname}.termination-log"
        term.write_bytes(b"")
        os.chown(term, *user)
        volume_args.append(f"{term}:{container.get('terminationMessagePath') or DEFAULT_TERMINATION_PATH}")
        extra = {k: v for k, v in (extra_env or {}).items() if k != "MD_PATH_MAP"}   # nothing is rewritten
        env = {"KUBERNETES_SERVICE_HOST": self.runner.api_host, "KUBERNETES_SERVICE_PORT": self.runner.api_port,
               **extra, **self._env(container)}
        expanded = {**container, **{k: [expand(a, env) for a in container.get(k) or []] for k in ("command", "args")}}
        argv = imagerun.pod_container_argv(image["ref"], expanded, sec, user, env=env, volumes=volume_args,
                                           hostname=self.name)
        return {"name": cname, "image": container.get("image", ""), "image_id": f"sha256:{image['id']}",
                "argv": argv, "env": imagerun.process_env(env), "cwd": str(self.dir), "log": self.dir / f"{cname}.log", "term": term,
                "has_command": True, "policy": container.get("terminationMessagePolicy") or "File"}

    def _exec(self, spec: dict) -> tuple[int, str, str, str]:
        """Run one container to completion: (exit code, reason, message, startedAt)."""
        started = now()
        if not spec["has_command"]:
            return 128, "StartError", ("the job runner needs an explicit command: it cannot read the entrypoint "
                                       f"of image {spec['image']!r}"), started
        exe = shutil.which(spec["argv"][0], path=spec["env"]["PATH"]) if spec["argv"] else None
        if not exe:
            return 128, "StartError", (f'exec: "{spec["argv"][0]}": executable file not found in $PATH '
                                       f'({spec["env"]["PATH"]})'), started
        with self.lock:
            if self.stopping:
                return 137, "Error", self.stopping, started
            with open(spec["log"], "ab") as out:
                proc = subprocess.Popen([exe] + spec["argv"][1:], env=spec["env"], cwd=spec["cwd"], stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self.procs[spec["name"]] = proc
            (self.dir / f"{spec['name']}.pid").write_text(str(proc.pid))
        log.info("%s/%s: container %s started (pid %d): %s", self.ns, self.name, spec["name"], proc.pid,
                 " ".join(spec["argv"])[:300])
        code = proc.wait()
        (self.dir / f"{spec['name']}.pid").unlink(missing_ok=True)
        if code < 0:                                   # killed by a signal: report it as a shell would
            code = 128 - code
        message = read_message(spec["term"], spec["log"], spec["policy"], code)
        return code, ("Completed" if code == 0 else "Error"), message, started

    # -- status --
    def _patch_status(self, status: dict):
        """Merge-patch pods/status, keeping conditions we do not own (PodScheduled...)."""
        try:
            current = self.api.read_namespaced_pod_status(self.name, self.ns)
        except ApiException as e:
            if e.status == 404:
                return
            raise
        if current.metadata.uid != self.uid:
            return
        ours = {c["type"] for c in status.get("conditions", [])}
        kept = [self.api.api_client.sanitize_for_serialization(c) for c in (current.status.conditions or [])
                if c.type not in ours]
        status = {**status, "conditions": kept + status.get("conditions", [])}
        try:
            self.api.patch_namespaced_pod_status(self.name, self.ns, {"status": status},
                                                 _content_type="application/merge-patch+json")
        except ApiException as e:
            if e.status != 404:
                raise

    @staticmethod
    def _conditions(ready: bool, reason: str = "", initialized: bool = True) -> list:
        t = now()
        def cond(kind, ok, why=""):
            c = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": t, "lastProbeTime": None}
            if why and not ok:
                c["reason"] = why
            return c
        return [cond("Initialized", initialized, "ContainersNotInitialized"), cond("Ready", ready, reason),
                cond("ContainersReady", ready, reason)]

    @staticmethod
    def _terminated(c: dict, code: int, reason: str, message: str, started: str, restarts: int = 0) -> dict:
        term = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now()}
        if message:
            term["message"] = message
        return {**container_status(c, restarts), "state": {"terminated": term}}

    # -- the whole pod --
    def run(self):
        """Run the pod to completion and report its final status."""
        spec = self.pod["spec"]
        self.dir.mkdir(parents=True, exist_ok=True)
        volumes = self._volumes()
        inits = [self._prepare(c, volumes) for c in spec.get("initContainers") or []]
        mains = [self._prepare(c, volumes) for c in spec["containers"]]
        self.started_at = now()
        deadline = spec.get("activeDeadlineSeconds")
        timer = threading.Timer(float(deadline), self.kill, args=("DeadlineExceeded",)) if deadline else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            self._run_all(spec, inits, mains)
        finally:
            if timer:
                timer.cancel()

    def _run_all(self, spec: dict, inits: list, mains: list):

        init_statuses = []
        for c in inits:
            self._patch_status({"phase": "Pending", "startTime": self.started_at, "hostIP": "127.0.0.1",
                                "conditions": self._conditions(False, "ContainersNotReady", initialized=False),
                                "initContainerStatuses": init_statuses + [{
                                    **container_status(c), "started": True,
                                    "state": {"running": {"startedAt": now()}}}]})
            code, reason, message, started = self._exec(c)
            init_statuses.append(self._terminated(c, code, reason, message, started))
            if code != 0:
                return self._finish(init_statuses, [self._waiting(m, "PodInitializing") for m in mains])

        running = [{**container_status(c), "ready": True, "started": True,
                    "state": {"running": {"startedAt": now()}}} for c in mains]
        if not self.stopping:
            self._patch_status({"phase": "Running", "startTime": self.started_at, "hostIP": "127.0.0.1",
                                "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                                "conditions": self._conditions(True), "initContainerStatuses": init_statuses,
                                "containerStatuses": running})
        results: dict[str, dict] = {}
        threads = [threading.Thread(target=self._run_container, args=(c, results, spec), daemon=True) for c in mains]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._finish(init_statuses, [results[c["name"]] for c in mains])

    @staticmethod
    def _waiting(c: dict, reason: str) -> dict:
        return {**container_status(c), "state": {"waiting": {"reason": reason}}}

    def _run_container(self, c: dict, results: dict, spec: dict):
        """Run one regular container; restart it in place on failure when restartPolicy is OnFailure."""
        restarts = 0
        while True:
            code, reason, message, started = self._exec(c)
            status = self._terminated(c, code, reason, message, started, restarts)
            if code == 0 or spec.get("restartPolicy") != "OnFailure" or self.stopping:
                results[c["name"]] = status
                return
            restarts += 1
            backoff = min(10 * 2 ** (restarts - 1), 300)
            log.info("%s/%s: container %s exited %d, restarting in %ds", self.ns, self.name, c["name"], code,
                     backoff)
            self._patch_status({"containerStatuses": [{
                **status, "lastState": status["state"], "state": {"waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {backoff}s restarting failed container={c['name']}"}}}]})
            end = time.monotonic() + backoff
            while time.monotonic() < end and not self.stopping:
                time.sleep(0.5)

    def _finish(self, init_statuses: list, statuses: list):
        if self.stopping == "deleted":
            log.info("%s/%s: stopped because the pod was deleted", self.ns, self.name)
            return
        failed = any(s["state"].get("terminated", {}).get("exitCode", 1) != 0
                     for s in init_statuses + statuses if "terminated" in s["state"]) or any(
            "waiting" in s["state"] for s in statuses)
        phase = "Failed" if failed else "Succeeded"
        status = {"phase": phase, "conditions": self._conditions(False, "PodFailed" if failed else "PodCompleted"),
                  "initContainerStatuses": init_statuses, "containerStatuses": statuses}
        if self.stopping == "DeadlineExceeded":
            status.update(phase="Failed", reason="DeadlineExceeded",
                          message="Pod was active on the node longer than the specified deadline")
        self._patch_status(status)
        codes = {s["name"]: s["state"].get("terminated", {}).get("exitCode") for s in statuses}
        log.info("%s/%s: %s %s", self.ns, self.name, status["phase"], codes)

    def kill(self, why: str):
        """Stop every process of the pod: SIGTERM to its process group, SIGKILL after the grace period."""
        with self.lock:
            if self.stopping:
                return
            self.stopping = why
            procs = list(self.procs.values())
        grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        log.info("%s/%s: stopping (%s), grace %ss", self.ns, self.name, why, grace)
        podrunner.stop_groups(procs, min(float(grace), podrunner.MAX_GRACE))


# --- the watch loop --------------------------------------------------------------------------------------


class Runner:
    """Watches optimizer pods (run once each, at most `parallel` at a time) and every pod bound to a runner node
    (run as a kubelet would, at most `max_serving` at a time; hack/podrunner.py)."""

    def __init__(self, api: client.CoreV1Api, venv: pathlib.Path, state: pathlib.Path, parallel: int,
                 runner_nodes: dict | None = None, max_serving: int = 4, backoff_base: float = 10.0,
                 kubelet_ports: dict | None = None, images: bool = False):
        self.api, self.venv, self.state, self.images = api, venv, state, images
        self.repo = pathlib.Path(__file__).resolve().parents[1]
        host = api.api_client.configuration.host          # https://127.0.0.1:16443
        m = re.match(r"https?://([^:/]+):?(\d*)", host)
        self.api_host, self.api_port = m.group(1), m.group(2) or "443"
        self.pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="pod")
        self.seen: set[str] = set()
        self.active: dict[str, PodRun] = {}
        self.lock = threading.Lock()
        self.fake_nodes: set[str] = set()
        self.runner_nodes = runner_nodes or {}            # name -> pool (gpu|cpu)
        self.max_serving, self.backoff_base = max_serving, backoff_base
        self.ips = podrunner.IPAllocator()
        self.serving: dict[str, podrunner.ServingPod] = {}   # uid -> pod on a runner node (running or queued)
        self.kubelet_ports = kubelet_ports or {}          # runner node -> port of its /metrics/resource

    def local_image(self, name: str) -> dict | None:
        """The locally built image a container names, when the runner runs containers in images (--images)."""
        return imagerun.local_image(name) if self.images and name else None

    def on_fake_node(self, node: str) -> bool:
        """Whether `node` is one of ours: a runner node or one of kwok's fake nodes. On a cluster with real nodes
        too (kind), a pod bound to a real node belongs to its kubelet, not to us."""
        if node in self.runner_nodes:
            return True
        if node not in self.fake_nodes:
            nodes = self.api.list_node(label_selector="type=kwok").items
            self.fake_nodes = {n.metadata.name for n in nodes
                               if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake"}
        return node in self.fake_nodes

    # -- optimizer pods --
    def handle(self, kind: str, pod: dict):
        """React to one watch event on an optimizer pod."""
        meta = pod["metadata"]
        uid = meta["uid"]
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            with self.lock:
                run = self.active.get(uid)
            if run:
                threading.Thread(target=run.kill, args=("deleted",), daemon=True).start()
            elif kind != "DELETED" and pod["spec"].get("nodeName") in self.runner_nodes:
                self.delete_now(meta)        # no kubelet but us finishes a deletion on a runner node
            return
        phase = (pod.get("status") or {}).get("phase")
        if not pod["spec"].get("nodeName") or phase in ("Succeeded", "Failed"):
            return
        if not self.on_fake_node(pod["spec"]["nodeName"]):
            return
        with self.lock:
            if uid in self.seen:
                return
            self.seen.add(uid)
        if phase == "Running":     # started by an earlier runner that is gone: its process is lost
            self.orphaned(pod)
            return
        log.info("%s/%s: queued", meta["namespace"], meta["name"])
        self.pool.submit(self.run, pod)

    def run(self, pod: dict):
        """Worker: run a pod, retrying configuration errors while the pod exists."""
        meta = pod["metadata"]
        try:
            current = self.api.read_namespaced_pod(meta["name"], meta["namespace"])
        except ApiException as e:
            if e.status == 404:
                return
            raise
        if current.metadata.uid != meta["uid"] or current.metadata.deletion_timestamp:
            return
        pod = self.api.api_client.sanitize_for_serialization(current)
        run = PodRun(self, pod)
        with self.lock:
            self.active[meta["uid"]] = run
        try:
            run.run()
        except ConfigError as e:
            log.info("%s/%s: %s; retrying in %ds", meta["namespace"], meta["name"], e, RETRY_CONFIG_ERROR_SECONDS)
            waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            run._patch_status({"phase": "Pending", "conditions": PodRun._conditions(False, "ContainersNotReady"),
                               "containerStatuses": [{**run._waiting(c, ""), "state": waiting}
                                                     for c in pod["spec"]["containers"]]})
            threading.Timer(RETRY_CONFIG_ERROR_SECONDS, self.pool.submit, args=(self.run, pod)).start()
        except Exception:
            log.exception("%s/%s: runner error", meta["namespace"], meta["name"])
            run._patch_status({"phase": "Failed", "reason": "JobRunnerError",
                               "message": "hack/jobrunner.py failed to run this pod; see .cluster/logs/jobrunner.log",
                               "conditions": PodRun._conditions(False, "PodFailed")})
        finally:
            with self.lock:
                self.active.pop(meta["uid"], None)

    def orphaned(self, pod: dict):
        """A pod left Running by a runner that died: fail it, honestly, so its Job can retry."""
        meta = pod["metadata"]
        log.warning("%s/%s: was running under a previous job runner; marking it Failed", meta["namespace"],
                    meta["name"])
        run = PodRun(self, pod)
        run._patch_status({"phase": "Failed", "conditions": PodRun._conditions(False, "PodFailed"),
                           "containerStatuses": [run._terminated(
                               {"name": c["name"], "image": c.get("image", "")}, 137, "Error",
                               "the job runner restarted while this container ran", now())
                               for c in pod["spec"]["containers"]]})

    # -- pods on runner nodes --
    def handle_serving(self, kind: str, pod: dict):
        """React to one watch event on a pod bound to a runner node (optimizer pods excepted: see handle)."""
        meta = pod["metadata"]
        if (meta.get("labels") or {}).get("app.kubernetes.io/component") == "optimizer":
            return
        uid = meta["uid"]
        with self.lock:
            sp = self.serving.get(uid)
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            if sp and not sp.stopping:
                threading.Thread(target=self._stop_serving, args=(sp, kind != "DELETED"), daemon=True).start()
            elif not sp and kind != "DELETED":
                self.delete_now(meta)
            return
        phase = (pod.get("status") or {}).get("phase")
        if sp or phase in ("Succeeded", "Failed"):
            return
        # A pod already Running here ran under an earlier runner, whose processes are gone: its containers
        # start again, counted as restarts (a kubelet that lost its containers does the same).
        restarts = {c["name"]: c.get("restartCount", 0) + 1
                    for c in (pod.get("status") or {}).get("containerStatuses") or []} if phase == "Running" else {}
        sp = podrunner.ServingPod(self, PodRun(self, pod), pod, restarts)
        with self.lock:
            self.serving[uid] = sp
        self._start_serving()

    def _start_serving(self):
        """Start queued serving pods while fewer than max_serving run; tell the others why they wait."""
        with self.lock:
            running = sum(1 for sp in self.serving.values() if sp.thread and not sp.done and not sp.stopping)
            queued = [sp for sp in self.serving.values() if sp.thread is None and not sp.stopping]
            start = queued[:max(0, self.max_serving - running)]
            for sp in start:
                sp.thread = threading.Thread(target=self._serve, args=(sp,), daemon=True, name=sp.key)
        for sp in start:
            log.info("%s: starting on %s", sp.key, sp.pod["spec"]["nodeName"])
            sp.thread.start()
        for sp in queued[len(start):]:
            sp.wait_for_slot()

    def _serve(self, sp: "podrunner.ServingPod"):
        sp.main()
        sp.done = True
        self._start_serving()        # a pod that ended (Succeeded/Failed) runs nothing any more

    def _stop_serving(self, sp: "podrunner.ServingPod", delete: bool):
        """Kill the pod's processes; then (the pod is being deleted) delete it for good, as the kubelet does."""
        sp.stop(delete)
        with self.lock:
            self.serving.pop(sp.run.uid, None)
        self.ips.release(sp.run.uid)
        shutil.rmtree(sp.run.dir / "volumes", ignore_errors=True)   # emptyDirs go with the pod; logs stay
        self._start_serving()

    def delete_now(self, meta: dict):
        """Finish a graceful deletion: delete with grace period 0, only the pod with this uid."""
        try:
            self.api.delete_namespaced_pod(meta["name"], meta["namespace"], grace_period_seconds=0,
                                           body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                       preconditions={"uid": meta["uid"]}))
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    # -- runner nodes --
    def running_containers(self, node: str) -> list[tuple[str, str, str, int, float]]:
        """(namespace, pod, container, process group, start time) of each container running on `node`: what
        its resource-metrics endpoint measures (hack/kubeletstats.py)."""
        with self.lock:
            pods = [sp for sp in self.serving.values() if sp.pod["spec"].get("nodeName") == node]
        out = []
        for sp in pods:
            for c in list(sp.inits) + list(sp.mains):
                p = c.proc
                if p is not None and p.returncode is None and "running" in c.state:
                    out.append((sp.run.ns, sp.run.name, c.name, p.pid, c.started_unix))   # pid = pgid (own session)
        return out

    def serve_kubelet_stats(self, cert: str, key: str, client_ca: str):
        """One HTTPS /metrics/resource endpoint per runner node, on 127.0.0.1 and its own port."""
        ctx = kubeletstats.tls_context(cert, key, client_ca)
        for name, port in self.kubelet_ports.items():
            kubeletstats.serve(name, port, ctx, lambda n=name: self.running_containers(n))

    def register_nodes(self):
        """Create the runner nodes (as a kubelet registers its node) and report them Ready."""
        for name, pool in self.runner_nodes.items():
            try:
                self.api.create_node(podrunner.node_manifest(name, pool, self.kubelet_ports.get(name)))
                log.info("registered node %s (%s)", name, pool)
            except ApiException as e:
                if e.status != 409:
                    raise
            self.heartbeat(name)

    def heartbeat(self, name: str):
        """Node Ready now, and its Lease renewed: the node lifecycle controller then keeps it Ready."""
        t = now()
        conditions = [{"type": kind, "status": status, "reason": reason, "lastHeartbeatTime": t,
                       "lastTransitionTime": t, "message": message}
                      for kind, status, reason, message in podrunner.NODE_CONDITIONS]
        status = {"conditions": conditions}
        if name in self.kubelet_ports:       # a node registered by an earlier runner may lack them
            status.update(addresses=podrunner.node_addresses(name),
                          daemonEndpoints=podrunner.daemon_endpoints(self.kubelet_ports[name]))
        self.api.patch_node_status(name, {"status": status})
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                          "renewTime": datetime.datetime.now(datetime.timezone.utc).strftime(
                              "%Y-%m-%dT%H:%M:%S.%fZ")}}
        coord = client.CoordinationV1Api(self.api.api_client)
        try:
            coord.patch_namespaced_lease(name, "kube-node-lease", lease)
        except ApiException as e:
            if e.status != 404:
                raise
            coord.create_namespaced_lease("kube-node-lease", lease)

    def heartbeat_loop(self):
        while True:
            time.sleep(10)
            for name in self.runner_nodes:
                try:
                    self.heartbeat(name)
                except Exception as e:
                    log.warning("node %s heartbeat failed: %s", name, e)

    def stop(self):
        """Kill every running pod's processes (runner shutdown); the pod objects stay."""
        with self.lock:
            runs = list(self.active.values())
            serving = list(self.serving.values())
        threads = [threading.Thread(target=sp.stop, args=(False,)) for sp in serving]
        for t in threads:
            t.start()
        for r in runs:
            r.kill("job runner stopped")
        for t in threads:
            t.join()

    # -- watches --
    def watch(self, handler, listed: threading.Event, **selector):
        """List, then watch from the list's resourceVersion; relist when the watch expires."""
        while True:
            try:
                resp = self.api.list_pod_for_all_namespaces(_preload_content=False, **selector)
                listing = json.loads(resp.data)
                for pod in listing["items"]:
                    handler("ADDED", pod)
                listed.set()
                rv = listing["metadata"]["resourceVersion"]
                while True:
                    w = watch.Watch()
                    for ev in w.stream(self.api.list_pod_for_all_namespaces, resource_version=rv,
                                       timeout_seconds=300, allow_watch_bookmarks=True, **selector):
                        obj = ev["raw_object"]
                        rv = obj["metadata"]["resourceVersion"]
                        if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            handler(ev["type"], obj)
            except ApiException as e:
                if e.status != 410:
                    log.warning("watch failed (%s); relisting in 2s", e.status)
                    time.sleep(2)
            except Exception as e:            # connection reset while the API server restarts, etc.
                log.warning("watch failed (%s); relisting in 2s", e)
                time.sleep(2)

    def loop(self, ready_file: pathlib.Path):
        """One watch for optimizer pods, one per runner node (a field selector on spec.nodeName, as a kubelet
        watches its own pods); ready once every first list succeeded."""
        self.register_nodes()
        threading.Thread(target=self.heartbeat_loop, daemon=True, name="heartbeat").start()
        watches = [(self.handle, {"label_selector": SELECTOR})] + [
            (self.handle_serving, {"field_selector": f"spec.nodeName={n}"}) for n in self.runner_nodes]
        events = []
        for handler, selector in watches:
            listed = threading.Event()
            events.append(listed)
            threading.Thread(target=self.watch, args=(handler, listed), kwargs=selector, daemon=True).start()
        for listed in events:
            listed.wait()
        ready_file.write_text(str(os.getpid()))
        threading.Event().wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--venv", required=True, help="the virtualenv that plays the image (first on PATH)")
    parser.add_argument("--state", required=True, help="cluster state dir (.cluster)")
    parser.add_argument("--parallel", type=int, default=2, help="optimizer pods run at once")
    parser.add_argument("--runner-node", action="append", default=[], metavar="NAME=gpu|cpu",
                        help="register this node and run every pod bound to it (repeatable)")
    parser.add_argument("--max-serving-pods", type=int, default=4,
                        help="pods on runner nodes run at once; the others wait, Pending (memory bound)")
    parser.add_argument("--images", action="store_true",
                        help="run containers whose image is in `make images`' store inside it (needs root); "
                             "the others are played with host processes")
    parser.add_argument("--backoff-base", type=float, default=10.0,
                        help="first crash-loop back-off in seconds (the kubelet's 10 s), doubling to 300 s")
    parser.add_argument("--kubelet-port-base", type=int, default=0, metavar="PORT",
                        help="serve each runner node's /metrics/resource (for metrics-server) over HTTPS on "
                             "127.0.0.1, the n-th --runner-node on PORT+n (0: not served)")
    parser.add_argument("--kubelet-cert", help="serving certificate of those endpoints (SAN IP:127.0.0.1)")
    parser.add_argument("--kubelet-key", help="its key")
    parser.add_argument("--kubelet-client-ca", help="CA whose client certificates may scrape them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    nodes = {}
    for item in args.runner_node:
        name, _, pool = item.partition("=")
        if pool not in ("gpu", "cpu"):
            parser.error(f"--runner-node {item!r}: expected NAME=gpu or NAME=cpu")
        nodes[name] = pool
    ports = {}
    if args.kubelet_port_base:
        if not (args.kubelet_cert and args.kubelet_key and args.kubelet_client_ca):
            parser.error("--kubelet-port-base needs --kubelet-cert, --kubelet-key and --kubelet-client-ca")
        ports = {name: args.kubelet_port_base + i for i, name in enumerate(nodes)}
    config.load_kube_config(config_file=args.kubeconfig)
    runner = Runner(client.CoreV1Api(), pathlib.Path(args.venv), pathlib.Path(args.state), max(1, args.parallel),
                    nodes, max(1, args.max_serving_pods), args.backoff_base, ports, args.images)
    if ports:
        runner.serve_kubelet_stats(args.kubelet_cert, args.kubelet_key, args.kubelet_client_ca)

    def on_term(signum, _frame):
        log.info("signal %d: stopping running pods", signum)
        runner.stop()
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log.info("watching pods with %s (%d at a time) and on runner nodes %s (%d at a time); containers of locally "
             "built images run %s", SELECTOR, args.parallel, ",".join(nodes) or "-", args.max_serving_pods,
             "inside them" if args.images else "as host processes")
    (pathlib.Path(args.state) / "jobrunner.mode").write_text("images\n" if args.images else "process\n")
    runner.loop(pathlib.Path(args.state) / "jobrunner.ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
