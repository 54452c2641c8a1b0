"""Runner nodes: really run every pod bound to one (run-gpu-0, run-cpu-0), as a kubelet would.

Used by hack/jobrunner.py, which registers the runner nodes (``--runner-node run-gpu-0=gpu``; kwok does not
manage them, so it plays none of their pods), renews their Leases, watches each node's pods and runs at most
``--max-serving-pods`` of them at once (the others wait, Pending, with reason RunnerAtCapacity). It reuses
jobrunner's PodRun for volumes, environment and path mapping. Per pod (class ServingPod):

* a loopback pod IP from 127.1.0.0/16 (IPAllocator), written to status.podIP/podIPs (hostIP 127.0.0.1), given
  to the processes as MD_POD_IP and to ``fieldRef: status.podIP``;
* init containers in order, then all containers, restartPolicy Always/OnFailure/Never honoured, restarts
  with the kubelet's back-off (base 10 s doubling to 300 s; ``--backoff-base``), restartCount, lastState,
  CrashLoopBackOff;
* startup/readiness/liveness probes (httpGet, tcpSocket, grpc, exec) run for real (run_probe); a startup or
  liveness failure kills and restarts the container; Ready comes from the probes;
* limits.memory enforced by polling the process group's RSS: SIGKILL, OOMKilled exit 137;
* faults for the TF Serving stand-in: annotation tfserving.modeldeploy.io/faults on the pod, else on its
  namespace, given as MD_TFSERVING_FAULTS (hack/tfserving/README.md);
* images: with ``--images``, a container of a locally built image runs inside it (jobrunner's PodRun); else a
  container with ``command`` runs it from the venv; ``tensorflow/serving`` without command runs
  hack/tfserving/server.py (see ``entrypoint``); any other image without command waits in ImagePullBackOff;
* deletion: SIGTERM, SIGKILL after the grace period (at most 30 s), then delete with gracePeriodSeconds=0.

Each runner node's resource metrics (what metrics-server scrapes from a kubelet) come from hack/kubeletstats.py.

Pure helpers (tested in tests/unit/test_jobrunner.py): node_manifest, is_tfserving, entrypoint, IPAllocator,
probe_timing, backoff, rss_of_group; the rest in tests/integration/test_podrunner.py.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

log = logging.getLogger("jobrunner.podrunner")

FAULTS_ANNOTATION = "tfserving.modeldeploy.io/faults"
MAX_GRACE = 30.0
TFSERVING_RE = re.compile(r"^(?:.+/)?tensorflow/serving(?::[\w][\w.-]*)?(?:@sha256:[0-9a-f]+)?$")


def now() -> str:
    """RFC 3339 UTC timestamp, second precision, as the API stores it."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_quantity(q: str) -> float:
    """Parse a Kubernetes quantity ("500m", "2Gi", "1e3") into a float."""
    suffixes = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
                "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", str(q).strip())
    if not m or m.group(2) not in suffixes:
        raise ValueError(f"not a quantity: {q!r}")
    return float(m.group(1)) * suffixes[m.group(2)]


# --- pure helpers ------------------------------------------------------------------------------------------

# What a healthy kubelet reports for its node: (type, status, reason, message).
NODE_CONDITIONS = [
    ("Ready", "True", "KubeletReady", "hack/jobrunner.py runs this node's pods as local processes"),
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
    ("PIDPressure", "False", "KubeletHasSufficientPID", ""),
]


def node_manifest(name: str, pool: str, kubelet_port: int | None = None) -> dict:
    """A runner node: labelled like the kwok node pool `pool` (gpu|cpu) plus modeldeploy.io/runner=true, and
    tainted so that only pods which tolerate modeldeploy.io/runner land on it (the rest stay on kwok nodes).
    A gpu node advertises nvidia.com/gpu for the scheduler; the processes still run on this machine's CPU.
    With `kubelet_port`, status.daemonEndpoints names the port of its resource-metrics endpoint
    (hack/kubeletstats.py), which metrics-server reaches at the InternalIP 127.0.0.1."""
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
              "modeldeploy.io/node-pool": pool, "modeldeploy.io/runner": "true"}
    capacity = {"cpu": "8", "memory": "16Gi", "pods": "20", "ephemeral-storage": "100Gi"}
    if pool == "gpu":
        labels.update({"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                       "nvidia.com/gpu.count": "8", "nvidia.com/gpu.memory": "81559"})
        capacity["nvidia.com/gpu"] = "8"
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": [{"key": "modeldeploy.io/runner", "value": "true", "effect": "NoSchedule"}]},
            "status": {"capacity": capacity, "allocatable": capacity, "addresses": node_addresses(name),
                       "nodeInfo": {"kubeletVersion": "v0.0.0-modeldeploy-runner", "operatingSystem": "linux",
                                    "architecture": "amd64", "containerRuntimeVersion": "local-process://"}}}
    if kubelet_port:
        node["status"]["daemonEndpoints"] = daemon_endpoints(kubelet_port)
    return node


def node_addresses(name: str) -> list[dict]:
    """A runner node's addresses: InternalIP 127.0.0.1 (what metrics-server dials, with
    --kubelet-preferred-address-types=InternalIP) and its name as Hostname."""
    return [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}]


def daemon_endpoints(kubelet_port: int) -> dict:
    """status.daemonEndpoints with the kubelet port (JSON key "Port", capitalised: core/v1 DaemonEndpoint)."""
    return {"kubeletEndpoint": {"Port": int(kubelet_port)}}


def is_tfserving(image: str) -> bool:
    """Whether `image` is a TensorFlow Serving image: repository tensorflow/serving, any tag or digest,
    optionally behind a registry (docker.io/tensorflow/serving:2.19.0-gpu)."""
    return bool(TFSERVING_RE.match(image or ""))


def entrypoint(container: dict, python: str, repo: str) -> tuple[dict | None, list[str], str]:
    """Map a container to what runs: (container, program, "") or (None, [], why it cannot start).

    A container with ``command`` is returned as it is (program []). A tensorflow/serving container without
    command gets the image's entrypoint: program [python, hack/tfserving/server.py] (host paths, never mapped
    like the pod's own paths: a checkout under /tmp must not turn into the pod's /tmp volume), then the
    entrypoint's flags as its command, with the image's ENV MODEL_NAME=model and MODEL_BASE_PATH=/models (the
    container's env overrides them; its args are appended).
    """
    if container.get("command"):
        return container, [], ""
    image = container.get("image", "")
    if not is_tfserving(image):
        return None, [], (f'Back-off pulling image "{image}": the local runner plays only tensorflow/serving '
                          "images and containers with an explicit command")
    c = dict(container)
    c["command"] = ["--port=8500", "--rest_api_port=8501", "--model_name=$(MODEL_NAME)",
                    "--model_base_path=$(MODEL_BASE_PATH)/$(MODEL_NAME)"]
    c["env"] = [{"name": "MODEL_NAME", "value": "model"}, {"name": "MODEL_BASE_PATH", "value": "/models"}] + \
        list(container.get("env") or [])
    return c, [python, f"{repo}/hack/tfserving/server.py"], ""


class IPAllocator:
    """Unique loopback pod IPs from a /16 (127.1.0.0/16), skipping .0 and .255 octets; thread-safe."""

    def __init__(self, cidr: str = "127.1.0.0/16"):
        self.net = ipaddress.ip_network(cidr)
        self.used: dict[str, str] = {}          # ip -> owner (pod uid)
        self.lock = threading.Lock()

    def allocate(self, owner: str) -> str:
        with self.lock:
            for ip, o in self.used.items():
                if o == owner:
                    return ip
            for addr in self.net.hosts():
                s = str(addr)
                if s.split(".")[-1] in ("0", "255") or s.split(".")[-2] == "255" or s in self.used:
                    continue
                self.used[s] = owner
                return s
        raise RuntimeError(f"no free pod IP in {self.net}")

    def release(self, owner: str):
        with self.lock:
            for ip in [ip for ip, o in self.used.items() if o == owner]:
                del self.used[ip]


def probe_timing(probe: dict | None) -> dict | None:
    """A probe's timing with the kubelet's defaults."""
    if not probe:
        return None
    return {"initialDelaySeconds": probe.get("initialDelaySeconds", 0), "periodSeconds": probe.get("periodSeconds", 10),
            "timeoutSeconds": probe.get("timeoutSeconds", 1), "successThreshold": probe.get("successThreshold", 1),
            "failureThreshold": probe.get("failureThreshold", 3)}


def backoff(restarts: int, base: float = 10.0, cap: float = 300.0) -> float:
    """The kubelet's crash-loop back-off before restart number `restarts` (1, 2, ...)."""
    return min(base * 2 ** max(0, restarts - 1), cap)


def resolve_port(port, container: dict) -> int:
    """A probe port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port {port!r} not found in the container's ports")


def stop_groups(procs: list, grace: float) -> None:
    """Stop processes as a kubelet stops a pod's containers: SIGTERM to each process group, SIGKILL to what
    still runs after `grace` seconds (at once when grace <= 0)."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        try:
            os.killpg(p.pid, signal.SIGKILL if grace <= 0 else signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + (grace if grace > 0 else 5)
    for p in running:
        try:
            p.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def rss_of_group(pgid: int) -> int:
    """Resident memory (bytes) of every process in process group `pgid` (the container's process tree)."""
    total, page = 0, os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:              # fields after "(comm)": state ppid pgrp ...
                with open(f"/proc/{entry}/statm") as f:
                    total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


def run_probe(probe: dict, container: dict, ip: str, env: dict, cwd: str) -> tuple[bool, str]:
    """Run one probe once: (success, message)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            h = probe["httpGet"]
            if (h.get("scheme") or "HTTP").upper() != "HTTP":
                return False, "only scheme HTTP is supported"
            url = f"http://{h.get('host') or ip}:{resolve_port(h['port'], container)}{h.get('path') or '/'}"
            req = urllib.request.Request(url, headers={x["name"]: x["value"] for x in h.get("httpHeaders") or []})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"
        if "tcpSocket" in probe:
            t = probe["tcpSocket"]
            with socket.create_connection((t.get("host") or ip, resolve_port(t["port"], container)), timeout=timeout):
                return True, ""
        if "grpc" in probe:
            import grpc
            from grpc_health.v1 import health_pb2, health_pb2_grpc
            g = probe["grpc"]
            with grpc.insecure_channel(f"{ip}:{int(g['port'])}") as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=g.get("service") or ""), timeout=timeout)
            ok = resp.status == health_pb2.HealthCheckResponse.SERVING
            return ok, "" if ok else f"service unhealthy (responded with {resp.status})"
        if "exec" in probe:
            argv = probe["exec"].get("command") or []
            exe = shutil.which(argv[0], path=env.get("PATH")) if argv else None
            if not exe:
                return False, f"exec: {argv[:1]} not found"
            p = subprocess.run([exe] + argv[1:], env=env, cwd=cwd, capture_output=True, timeout=timeout)
            return p.returncode == 0, p.stdout.decode(errors="replace")[-200:]
    except subprocess.TimeoutExpired:
        return False, "command timed out"
    except Exception as e:                        # connection refused, timeout, grpc error...
        return False, str(e)[:200]
    return False, "probe has no handler"


# --- one container ---------------------------------------------------------------------------------------


class Container:
    """One container of a ServingPod: its process, probes, memory watch and status."""

    def __init__(self, pod: "ServingPod", spec: dict | None, raw: dict, init: bool, error: str = ""):
        self.pod, self.spec, self.raw, self.init = pod, spec, raw, init
        self.name, self.image = raw["name"], raw.get("image", "")
        self.error = error
        self.restarts = 0
        self.state: dict = {"waiting": {"reason": "PodInitializing"}}
        self.last: dict | None = None
        self.ready = self.started = False
        self.proc: subprocess.Popen | None = None
        self.started_unix = 0.0
        self.kill_reason: str | None = None        # why we killed it: OOMKilled / liveness / startup / stop
        self.limit = None
        mem = ((raw.get("resources") or {}).get("limits") or {}).get("memory")
        if mem:
            self.limit = parse_quantity(mem)

    def status(self) -> dict:
        s = {"name": self.name, "image": self.image, "imageID": (self.spec or {}).get("image_id", ""),
             "containerID": "", "ready": self.ready,
             "started": self.started, "restartCount": self.restarts, "state": self.state}
        if self.last:
            s["lastState"] = self.last
        return s

    def start(self) -> bool:
        """Start the process; False if it cannot start (state says why)."""
        if self.error:
            self.state = {"waiting": {"reason": "ImagePullBackOff", "message": self.error}}
            return False
        argv, env = self.spec["argv"], self.spec["env"]
        exe = shutil.which(argv[0], path=env["PATH"]) if argv else None
        if not exe:
            self.state = {"waiting": {"reason": "RunContainerError",
                                      "message": f'exec: "{argv[0] if argv else ""}": executable file not found in $PATH'}}
            return False
        logf = self.spec["log"]
        with open(logf, "ab") as out:
            if logf.stat().st_size:
                out.write(f"\n----- {now()} container {self.name} (re)started, restart {self.restarts} -----\n".encode())
                out.flush()
            self.proc = subprocess.Popen([exe] + argv[1:], env=env, cwd=self.spec["cwd"], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.started_unix = time.time()            # container_start_time_seconds (hack/kubeletstats.py)
        (self.pod.run.dir / f"{self.name}.pid").write_text(str(self.proc.pid))
        self.kill_reason = None
        self.state = {"running": {"startedAt": now()}}
        log.info("%s: container %s started (pid %d): %s", self.pod.key, self.name, self.proc.pid, " ".join(argv)[:300])
        return True

    def kill(self, reason: str, grace: float | None = None):
        """SIGTERM the process group, SIGKILL after `grace` (the pod's terminationGracePeriodSeconds, capped)."""
        p = self.proc
        if not p or p.poll() is not None:
            return
        self.kill_reason = self.kill_reason or reason
        if grace is None:
            grace = min(float(self.pod.pod["spec"].get("terminationGracePeriodSeconds", 30)), MAX_GRACE)
        stop_groups([p], grace)

    def watch(self):
        """While the process runs: poll memory and run probes (main containers). Returns the exit code."""
        p, spec = self.proc, self.raw
        t0 = time.monotonic()
        probes = {k: spec.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe") if spec.get(k)}
        due = {k: t0 + probe_timing(v)["initialDelaySeconds"] for k, v in probes.items()}
        ok_n = {k: 0 for k in probes}
        fail_n = {k: 0 for k in probes}
        if self.init:
            probes = {}
        self.started = "startupProbe" not in probes
        self.ready = self.started and "readinessProbe" not in probes and not self.init
        self.pod.publish()
        while p.poll() is None:
            if self.pod.stopping:
                break
            if self.limit and rss_of_group(p.pid) > self.limit:
                log.info("%s: container %s over its memory limit: OOMKilled", self.pod.key, self.name)
                self.kill_reason = "OOMKilled"
                self.kill("OOMKilled", grace=0)
                break
            t = time.monotonic()
            for kind, probe in probes.items():
                if t < due[kind] or (kind != "startupProbe" and not self.started) or \
                        (kind == "startupProbe" and self.started):
                    continue
                timing = probe_timing(probe)
                due[kind] = t + timing["periodSeconds"]
                ok, msg = run_probe(probe, spec, self.pod.ip, self.spec["env"], self.spec["cwd"])
                if p.poll() is not None:
                    break
                if ok:
                    fail_n[kind], ok_n[kind] = 0, ok_n[kind] + 1
                else:
                    ok_n[kind], fail_n[kind] = 0, fail_n[kind] + 1
                    log.info("%s: %s %s failed: %s", self.pod.key, self.name, kind, msg)
                if kind == "startupProbe" and ok_n[kind] >= timing["successThreshold"]:
                    self.started = True
                    self.ready = "readinessProbe" not in probes
                    for k in ("readinessProbe", "livenessProbe"):   # they start once startup succeeded
                        if k in due:
                            due[k] = max(due[k], time.monotonic())
                elif kind == "readinessProbe":
                    if ok and ok_n[kind] >= timing["successThreshold"]:
                        self.ready = True
                    elif not ok and fail_n[kind] >= timing["failureThreshold"]:
                        self.ready = False
                elif kind in ("startupProbe", "livenessProbe") and fail_n[kind] >= timing["failureThreshold"]:
                    log.info("%s: container %s failed %s: killing it", self.pod.key, self.name, kind)
                    self.ready = False
                    self.pod.publish()
                    self.kill(kind)
                    break
                self.pod.publish()
            time.sleep(0.2)
        code = p.wait()
        (self.pod.run.dir / f"{self.name}.pid").unlink(missing_ok=True)
        if code < 0:
            code = 128 - code
        reason = "Completed" if code == 0 else "Error"
        if self.kill_reason == "OOMKilled":
            code, reason = 137, "OOMKilled"
        self.ready = self.started = False
        self.state = {"terminated": {"exitCode": code, "reason": reason,
                                     "startedAt": self.state.get("running", {}).get("startedAt", now()),
                                     "finishedAt": now()}}
        return code


# --- one pod ---------------------------------------------------------------------------------------------


class ServingPod:
    """A pod on a runner node, run from start to deletion in its own thread."""

    def __init__(self, runner, run, pod: dict, restart_counts: dict | None = None):
        self.runner, self.run, self.pod = runner, run, pod   # run: a jobrunner.PodRun (volumes, env, status)
        self.key = f"{run.ns}/{run.name}"
        self.ip = ""
        self.stopping = False
        self.lock = threading.Lock()
        self.last_sig = None
        self.phase = "Pending"
        self.inits: list[Container] = []
        self.mains: list[Container] = []
        self.restart_counts = restart_counts or {}
        self.start_time = now()
        self.cond_times: dict = {}
        self.thread: threading.Thread | None = None   # set by the runner when the pod gets a slot
        self.done = False                             # main() returned: the pod runs nothing any more

    # -- status --
    def _cond(self, kind: str, ok: bool, reason: str = "") -> dict:
        prev = self.cond_times.get(kind)
        if not prev or prev[0] != ok:
            self.cond_times[kind] = prev = (ok, now())
        c = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": prev[1], "lastProbeTime": None}
        if reason and not ok:
            c["reason"] = reason
        return c

    def publish(self, extra: dict | None = None):
        """Write the pod status, if it changed since the last write."""
        with self.lock:
            initialized = all("terminated" in c.state and c.state["terminated"]["exitCode"] == 0 for c in self.inits)
            ready = initialized and bool(self.mains) and all(c.ready for c in self.mains) and self.phase == "Running"
            why = "PodCompleted" if self.phase == "Succeeded" else "PodFailed" if self.phase == "Failed" else \
                "ContainersNotReady"
            status = {"phase": self.phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                      "startTime": self.start_time,
                      "conditions": [self._cond("Initialized", initialized, "ContainersNotInitialized"),
                                     self._cond("Ready", ready, why), self._cond("ContainersReady", ready, why)],
                      "initContainerStatuses": [c.status() for c in self.inits],
                      "containerStatuses": [c.status() for c in self.mains]}
            if self.ip:
                status.update(podIP=self.ip, podIPs=[{"ip": self.ip}])
            if extra:
                status.update(extra)
            sig = json.dumps(status, sort_keys=True)
            if sig == self.last_sig:
                return
            self.last_sig = sig
        try:
            self.run._patch_status(status)
        except Exception as e:
            log.warning("%s: status write failed: %s", self.key, e)
            self.last_sig = None

    def wait_for_slot(self):
        """Report that the pod waits for --max-serving-pods."""
        msg = (f"the local runner already runs --max-serving-pods={self.runner.max_serving} pods on runner nodes "
               "(MD_MAX_SERVING_PODS); this pod starts when one of them is gone")
        self.mains = [Container(self, None, c, False) for c in self.pod["spec"]["containers"]]
        for c in self.mains:
            c.state = {"waiting": {"reason": "RunnerAtCapacity", "message": msg}}
        self.publish()

    def _sleep(self, seconds: float):
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stopping:
            time.sleep(0.2)

    # -- lifecycle --
    def main(self):
        """Run the pod (thread body). Returns when every container is done or the pod is being deleted."""
        try:
            self._main()
        except Exception:
            log.exception("%s: runner error", self.key)
            self.publish({"phase": "Failed", "reason": "JobRunnerError",
                          "message": "hack/jobrunner.py failed to run this pod; see .cluster/logs/jobrunner.log"})

    def _prepare(self, raw: dict, init: bool, volumes: dict) -> Container:
        run = self.run
        # A locally built image runs as it is (run._prepare); other images are played (entrypoint).
        c, program, error = (raw, [], "") if self.runner.local_image(raw.get("image", "")) else \
            entrypoint(raw, str(self.runner.venv / "bin" / "python"), str(self.runner.repo))
        if error:
            return Container(self, None, raw, init, error)
        mapping = {}
        for m in raw.get("volumeMounts") or []:
            if m["name"] in volumes:
                mapping[m["mountPath"]] = str(volumes[m["name"]] / m["subPath"]) if m.get("subPath") \
                    else str(volumes[m["name"]])
        extra = {"MD_POD_IP": self.ip, "MD_PATH_MAP": json.dumps(mapping)}
        faults = self._faults()
        if faults is not None:
            extra["MD_TFSERVING_FAULTS"] = faults
        if is_tfserving(raw.get("image", "")):
            extra["MD_TFSERVING_STRICT_FLAGS"] = "1"
        spec = run._prepare(c, volumes, extra, program)
        return Container(self, spec, raw, init)

    def _faults(self) -> str | None:
        """The TF Serving stand-in's fault behaviours: the pod's annotation, else its namespace's (a
        ModelDeployment has no pod annotations to set, so tests annotate their namespace)."""
        value = (self.pod["metadata"].get("annotations") or {}).get(FAULTS_ANNOTATION)
        if value is None:
            ns = self.run.api.read_namespace(self.run.ns)
            value = (ns.metadata.annotations or {}).get(FAULTS_ANNOTATION)
        return value

    def _main(self):
        spec, run = self.pod["spec"], self.run
        policy = spec.get("restartPolicy") or "Always"
        self.ip = self.runner.ips.allocate(run.uid)
        run.pod_ip = self.ip
        run.dir.mkdir(parents=True, exist_ok=True)
        volumes = run._volumes()
        self.inits = [self._prepare(c, True, volumes) for c in spec.get("initContainers") or []]
        self.mains = [self._prepare(c, False, volumes) for c in spec["containers"]]
        for c in self.inits + self.mains:
            c.restarts = self.restart_counts.get(c.name, 0)
        self.publish()
        for c in self.inits:                      # init containers, in order, each until it succeeds
            code = self._run_container(c, policy, init=True)
            if self.stopping:
                return
            if code != 0:                         # restartPolicy Never: the pod fails
                self.phase = "Failed"
                self.publish()
                return
        self.phase = "Running"
        threads = [threading.Thread(target=self._run_container, args=(c, policy), daemon=True) for c in self.mains]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.stopping:
            return
        failed = any(c.state.get("terminated", {}).get("exitCode", 1) != 0 for c in self.mains)
        self.phase = "Failed" if failed else "Succeeded"
        self.publish()
        log.info("%s: %s", self.key, self.phase)

    def _crashloop(self, c: Container):
        c.last = c.state
        c.restarts += 1
        wait = backoff(c.restarts, self.runner.backoff_base)
        c.state = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off {wait:g}s restarting failed container={c.name} pod={self.run.name}"}}
        self.publish()
        self._sleep(wait)

    def _run_container(self, c: Container, policy: str, init: bool = False) -> int | None:
        """Run `c` until it is done: an init container until it exits 0, a container as its pod's restartPolicy
        says; failures restart with back-off. Returns the last exit code (None when the pod is stopping)."""
        while not self.stopping:
            if not c.start():
                self.publish()
                self._sleep(self.runner.backoff_base)
                continue
            self.publish()
            code = c.watch()
            self.publish()
            done = code == 0 and (init or policy == "OnFailure")
            if self.stopping or done or policy == "Never":
                return None if self.stopping else code
            self._crashloop(c)
        return None

    def stop(self, delete: bool):
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, then (delete) remove the pod object."""
        self.stopping = True
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds", self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        grace = min(float(grace if grace is not None else 30), MAX_GRACE)
        threads = [threading.Thread(target=c.kill, args=("deleted", grace)) for c in self.inits + self.mains]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if delete:
            self.runner.delete_now(meta)
