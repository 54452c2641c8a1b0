"""The runner nodes' kubelet resource-metrics endpoint: what metrics-server scrapes from a kubelet.

metrics-server (v0.8.0, pkg/scraper/client/resource) GETs ``https://<node address>:<port>/metrics/resource`` from
every node its ``--node-selector`` keeps, with the address from ``node.status.addresses`` (the first of
``--kubelet-preferred-address-types``) and the port from ``status.daemonEndpoints.kubeletEndpoint.Port``
(``--kubelet-use-node-status-port``). It parses Prometheus text and keeps only these series (decode.go):

* ``node_cpu_usage_seconds_total`` and ``node_memory_working_set_bytes``: a node point is dropped when either
  is 0;
* ``container_cpu_usage_seconds_total``, ``container_memory_working_set_bytes`` and
  ``container_start_time_seconds``, labelled ``container``, ``namespace`` and ``pod``: a pod is dropped whole
  when one of its containers reports 0 CPU or 0 memory.

Each sample carries its own timestamp (milliseconds): the CPU rate is the difference of two scrapes' counters
over the difference of their timestamps, so a timestamp is the time the value was read. A counter that goes down,
or a start time that moves back, makes metrics-server skip that point (storage/types.go resourceUsage); a new
start time marks a restart. The kubelet also serves ``pod_*`` and ``scrape_error``, which metrics-server ignores;
they are served here too, as the kubelet does.

What is measured here, for real, from /proc: a container's CPU seconds are utime+stime (+ cutime+cstime: the
children it reaped) of every process in its process group (each container runs in its own session), its working
set is their resident memory (RSS; the kubelet's cgroup working set also counts page cache not yet inactive). A
runner node is this machine: its node figures are the machine's (/proc/stat busy time, MemTotal - MemAvailable),
so both runner nodes report the same node usage.

Served over HTTPS with a certificate from the cluster's CA, and, as a kubelet with ``--client-ca-file`` and no
anonymous access, only to clients that present a certificate from that CA (metrics-server uses its kubeconfig's).
"""
from __future__ import annotations

import dataclasses
import http.server
import logging
import os
import ssl
import sys
import threading
import time

log = logging.getLogger("jobrunner.kubeletstats")

PATH = "/metrics/resource"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One running container's figures, read at `ts` (Unix seconds)."""
    namespace: str
    pod: str
    container: str
    cpu_seconds: float
    memory_bytes: int
    start_time: float          # Unix seconds when the container's process started
    ts: float


# --- reading /proc -------------------------------------------------------------------------------------------


def parse_pid_stat(text: str) -> tuple[int, int, int]:
    """(pgrp, CPU clock ticks incl. reaped children, RSS pages) from the text of /proc/<pid>/stat."""
    fields = text.rsplit(")", 1)[1].split()       # after "(comm)", which may hold spaces: state ppid pgrp ...
    # proc(5) numbers fields from 1: pgrp 5, utime 14, stime 15, cutime 16, cstime 17, rss 24; fields[0] is 3.
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return int(fields[2]), ticks, int(fields[21])


def group_usage(pgids: set[int], proc: str = "/proc") -> dict[int, tuple[float, int]]:
    """{pgid: (CPU seconds, RSS bytes)} summed over the live processes of each process group in `pgids`."""
    hz, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    ticks = dict.fromkeys(pgids, 0)
    rss = dict.fromkeys(pgids, 0)
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat") as f:
                pgrp, t, r = parse_pid_stat(f.read())
        except (OSError, IndexError, ValueError):
            continue                               # the process exited meanwhile
        if pgrp in ticks:
            ticks[pgrp] += t
            rss[pgrp] += r * page
    return {g: (ticks[g] / hz, rss[g]) for g in pgids}


def parse_machine_cpu(stat_text: str, hz: int) -> float:
    """Busy CPU seconds of the whole machine from /proc/stat's "cpu" line (all but idle and iowait; guest time
    is already inside user)."""
    for line in stat_text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            v = [int(x) for x in parts[1:9]] + [0] * (8 - len(parts[1:9]))
            user, nice, system, _idle, _iowait, irq, softirq, steal = v
            return (user + nice + system + irq + softirq + steal) / hz
    raise ValueError("no cpu line in /proc/stat")


def parse_machine_memory(meminfo_text: str) -> int:
    """The machine's working set in bytes: MemTotal - MemAvailable (/proc/meminfo, kB)."""
    kb = {}
    for line in meminfo_text.splitlines():
        name, _, rest = line.partition(":")
        if rest.split():
            kb[name] = int(rest.split()[0])
    return (kb["MemTotal"] - kb["MemAvailable"]) * 1024


def machine_usage() -> tuple[float, int]:
    with open("/proc/stat") as f:
        cpu = parse_machine_cpu(f.read(), os.sysconf("SC_CLK_TCK"))
    with open("/proc/meminfo") as f:
        mem = parse_machine_memory(f.read())
    return cpu, mem


# --- the exposition ------------------------------------------------------------------------------------------


class Monotonic:
    """Keeps each container's CPU counter from going down between scrapes (a process of the group that exited
    unreaped by the group takes its ticks with it); a restart (new start time) starts a new counter."""

    def __init__(self):
        self.seen: dict[tuple, float] = {}
        self.lock = threading.Lock()

    def apply(self, samples: list[Sample]) -> list[Sample]:
        with self.lock:
            keys, out = {}, []
            for s in samples:
                key = (s.namespace, s.pod, s.container, s.start_time)
                cpu = max(s.cpu_seconds, self.seen.get(key, 0.0))
                keys[key] = cpu
                out.append(dataclasses.replace(s, cpu_seconds=cpu))
            self.seen = keys                          # containers gone since the last scrape are forgotten
            return out


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def format_metrics(node_cpu: float, node_memory: int, node_ts: float, samples: list[Sample]) -> str:
    """The /metrics/resource body (Prometheus text format 0.0.4), as the kubelet writes it."""
    ms = lambda t: str(int(t * 1000))             # noqa: E731  (sample timestamps are milliseconds)
    out = []

    def family(name: str, kind: str, help_: str, rows: list[tuple[str, float, float]]):
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {_num(value)} {ms(ts)}" for labels, value, ts in rows)

    def lbl(s: Sample, container: bool = True) -> str:
        c = f'container="{s.container}",' if container else ""
        return f'{{{c}namespace="{s.namespace}",pod="{s.pod}"}}'

    pods: dict[tuple[str, str], list[Sample]] = {}
    for s in samples:
        pods.setdefault((s.namespace, s.pod), []).append(s)
    family("container_cpu_usage_seconds_total", "counter",
           "Cumulative cpu time consumed by the container in core-seconds",
           [(lbl(s), s.cpu_seconds, s.ts) for s in samples])
    family("container_memory_working_set_bytes", "gauge", "Current working set of the container in bytes",
           [(lbl(s), s.memory_bytes, s.ts) for s in samples])
    family("container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds",
           [(lbl(s), s.start_time, s.ts) for s in samples])
    family("node_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the node in core-seconds",
           [("", node_cpu, node_ts)])
    family("node_memory_working_set_bytes", "gauge", "Current working set of the node in bytes",
           [("", node_memory, node_ts)])
    family("pod_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the pod in core-seconds",
           [(lbl(ss[0], False), sum(s.cpu_seconds for s in ss), ss[0].ts) for ss in pods.values()])
    family("pod_memory_working_set_bytes", "gauge", "Current working set of the pod in bytes",
           [(lbl(ss[0], False), sum(s.memory_bytes for s in ss), ss[0].ts) for ss in pods.values()])
    out.append("# HELP scrape_error 1 if there was an error while getting container metrics, 0 otherwise")
    out.append("# TYPE scrape_error gauge")
    out.append("scrape_error 0")
    return "\n".join(out) + "\n"


def collect(containers: list[tuple[str, str, str, int, float]], monotonic: Monotonic) -> str:
    """Measure now and format. `containers`: (namespace, pod, container, pgid, start time) of each running
    container on the node."""
    ts = time.time()
    usage = group_usage({c[3] for c in containers})
    samples = []
    for ns, pod, name, pgid, started in containers:
        cpu, mem = usage[pgid]
        if mem == 0:                    # its processes are gone: the container is no longer running
            continue
        samples.append(Sample(ns, pod, name, cpu, mem, min(started, ts), ts))
    node_cpu, node_mem = machine_usage()
    return format_metrics(node_cpu, node_mem, ts, monotonic.apply(samples))


# --- the HTTPS server ----------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "modeldeploy-runner-kubelet"

    def setup(self):
        self.request.settimeout(10)
        self.request.do_handshake()     # here, in the request's thread, not in the accept loop
        super().setup()

    def do_GET(self):
        if self.path.split("?", 1)[0] != PATH:
            self.send_error(404)
            return
        try:
            body = collect(self.server.containers(), self.server.monotonic).encode()
        except Exception as e:           # never take the runner down for a scrape
            log.warning("%s: %s failed: %s", self.server.node, PATH, e)
            self.send_error(500)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):   # one line per scrape would flood the runner's log
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        log.warning("%s: request from %s failed: %s", self.node, client_address[0],
                    str(sys.exc_info()[1])[:200])


def tls_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def serve(node: str, port: int, ctx: ssl.SSLContext, containers, host: str = "127.0.0.1") -> _Server:
    """Serve `node`'s /metrics/resource on https://host:port in a daemon thread; `containers()` lists the node's
    running containers as collect() takes them."""
    server = _Server((host, port), _Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.node, server.containers, server.monotonic = node, containers, Monotonic()
    threading.Thread(target=server.serve_forever, daemon=True, name=f"kubelet-{node}").start()
    log.info("node %s: kubelet resource metrics on https://%s:%d%s", node, host, server.server_address[1], PATH)
    return server
