"""The runner nodes' kubelet resource-metrics endpoint (hack/kubeletstats.py): the exposition metrics-server
v0.8.0 parses (pkg/scraper/client/resource/decode.go), /proc readings of a real process group, and the HTTPS
endpoint with client certificates (openssl makes a throw-away CA)."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

_HACK = pathlib.Path(__file__).resolve().parents[2] / "hack"


def _load(name):
    if name not in sys.modules:          # registered first: dataclasses look their module up
        spec = importlib.util.spec_from_file_location(name, _HACK / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


ks = _load("kubeletstats")
podrunner = _load("podrunner")

T = 1_700_000_000.125


def _sample(pod="p-1", container="tfserving", cpu=4.5, mem=12_533_760, start=T - 100, ns="default"):
    return ks.Sample(ns, pod, container, cpu, mem, start, T)


def _decode_like_metrics_server(text: str) -> dict:
    """What metrics-server's decodeBatch takes from each line: series by name prefix, labels by substring search
    (parseContainerLabels), value, timestamp in ms."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value, *ts = line.split(" ")          # a sample without timestamp: metrics-server's default
        name = re.match(r"[a-z_]+", series).group(0)
        labels = {k: re.search(k + r'="([^"]*)"', series).group(1) for k in ("container", "pod", "namespace")
                  if f'{k}="' in series}
        out[(name, labels.get("namespace"), labels.get("pod"), labels.get("container"))] = (float(value), int(ts[0]) if ts else None)
    return out


def test_format_has_what_metrics_server_reads():
    text = ks.format_metrics(357.35, 1_616_273_408, T, [_sample(), _sample(container="sidecar", cpu=0.5, mem=1000)])
    got = _decode_like_metrics_server(text)
    ms = int(T * 1000)
    assert got[("container_cpu_usage_seconds_total", "default", "p-1", "tfserving")] == (4.5, ms)
    assert got[("container_memory_working_set_bytes", "default", "p-1", "tfserving")] == (12_533_760, ms)
    assert got[("container_start_time_seconds", "default", "p-1", "tfserving")] == (T - 100, ms)
    assert got[("node_cpu_usage_seconds_total", None, None, None)] == (357.35, ms)
    assert got[("node_memory_working_set_bytes", None, None, None)] == (1_616_273_408, ms)
    assert got[("pod_cpu_usage_seconds_total", "default", "p-1", None)] == (5.0, ms)
    assert got[("pod_memory_working_set_bytes", "default", "p-1", None)] == (12_534_760, ms)


def test_format_is_valid_prometheus_text():
    text = ks.format_metrics(1.0, 2, T, [_sample()])
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # prometheus_client drops the _total suffix from a counter family's name
    assert families["container_cpu_usage_seconds"].type == "counter"
    assert families["container_memory_working_set_bytes"].type == "gauge"
    (s,) = families["container_cpu_usage_seconds"].samples
    assert s.labels == {"container": "tfserving", "namespace": "default", "pod": "p-1"}
    assert s.timestamp == pytest.approx(T, abs=0.001)
    assert families["scrape_error"].samples[0].value == 0


def test_format_without_containers_still_has_the_node():
    got = _decode_like_metrics_server(ks.format_metrics(10.0, 20, T, []))
    assert set(got) == {("node_cpu_usage_seconds_total", None, None, None),
                        ("node_memory_working_set_bytes", None, None, None), ("scrape_error", None, None, None)}
    assert got[("scrape_error", None, None, None)] == (0, None)


def test_parse_pid_stat_with_spaces_and_parens_in_comm():
    # proc(5) fields 3..: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime
    # cutime cstime priority nice num_threads itrealvalue starttime vsize rss(24) ...
    fields = ["S", "1", "4242", "4242"] + ["0"] * 7 + ["150", "50", "7", "3"] + ["0"] * 6 + ["2560"] + ["0"] * 20
    text = "4243 (tf serving (x)) " + " ".join(fields)
    assert ks.parse_pid_stat(text) == (4242, 210, 2560)


def test_parse_machine_figures():
    stat = "cpu  100 20 30 5000 40 5 6 7 0 0\ncpu0 50 10 15 2500 20 2 3 3 0 0\nintr 1\n"
    assert ks.parse_machine_cpu(stat, 100) == pytest.approx((100 + 20 + 30 + 5 + 6 + 7) / 100)
    meminfo = "MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\nHugePages_Total:       0\n"
    assert ks.parse_machine_memory(meminfo) == 4_000_000 * 1024


def test_monotonic_counter_never_goes_down_and_restarts_reset_it():
    m = ks.Monotonic()
    assert m.apply([_sample(cpu=5.0)])[0].cpu_seconds == 5.0
    assert m.apply([_sample(cpu=4.0)])[0].cpu_seconds == 5.0          # a process left the group
    assert m.apply([_sample(cpu=6.0)])[0].cpu_seconds == 6.0
    assert m.apply([_sample(cpu=0.2, start=T - 1)])[0].cpu_seconds == 0.2   # restarted: a new counter
    m.apply([])                                                         # gone: forgotten
    assert m.apply([_sample(cpu=1.0)])[0].cpu_seconds == 1.0


def test_group_usage_measures_a_real_process_group():
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.4: pass\ntime.sleep(30)\n"
    p = subprocess.Popen([sys.executable, "-c", burn], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            cpu, rss = ks.group_usage({p.pid})[p.pid]
            if cpu >= 0.4 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert 0.35 <= cpu < 5 and rss > 1 << 20
        assert ks.group_usage({999_999_999}) == {999_999_999: (0.0, 0)}
    finally:
        os.killpg(p.pid, 9)
        p.wait()


def test_node_manifest_registers_the_kubelet_port():
    node = podrunner.node_manifest("run-cpu-0", "cpu", 16251)
    assert node["status"]["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 16251}}
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    assert "daemonEndpoints" not in podrunner.node_manifest("run-cpu-0", "cpu")["status"]


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make the test certificates")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    _openssl("genpkey", *ec, "-out", "ca.key", cwd=d)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test-ca", "-days", "1", "-out", "ca.crt",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign", cwd=d)
    for name, ext in (("server", "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        _openssl("genpkey", *ec, "-out", f"{name}.key", cwd=d)
        _openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
    return d


def test_https_endpoint_serves_measured_containers_to_ca_clients_only(pki):
    me = os.getpgid(0)
    ctx = ks.tls_context(str(pki / "server.crt"), str(pki / "server.key"), str(pki / "ca.crt"))
    server = ks.serve("run-cpu-0", 0, ctx, lambda: [("ns1", "pod-a", "main", me, time.time() - 5)])
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        client = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        client.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        with urllib.request.urlopen(url + ks.PATH, context=client, timeout=10) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            got = _decode_like_metrics_server(r.read().decode())
        cpu, _ = got[("container_cpu_usage_seconds_total", "ns1", "pod-a", "main")]
        mem, _ = got[("container_memory_working_set_bytes", "ns1", "pod-a", "main")]
        assert cpu > 0 and mem > 1 << 20
        assert got[("node_cpu_usage_seconds_total", None, None, None)][0] > 0
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/metrics/cadvisor", context=client, timeout=10)
        assert e.value.code == 404
        anonymous = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            urllib.request.urlopen(url + ks.PATH, context=anonymous, timeout=10).read()
    finally:
        server.shutdown()
        server.server_close()
