"""Structured logs (modeldeploy.controller.obslog): namespace and name on every line, JSON by option, no secret."""
from __future__ import annotations

import io
import json
import logging

import kopf
import pytest

from modeldeploy.controller import obslog

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ENV_SECRET = "modeldeploy-secret"

# Lines an operator might log by accident, and the secret each must not reveal.
LEAKS = [
    (f"AWS_SECRET_ACCESS_KEY={ENV_SECRET} AWS_REGION=us-east-1", ENV_SECRET),
    (f"env: [{{'name': 'AWS_SECRET_ACCESS_KEY', 'value': '{ENV_SECRET}'}}]", ENV_SECRET),
    ('{"name": "HF_TOKEN", "value": "hf_abcdef123456"}', "hf_abcdef123456"),
    (f'{{"aws_secret_access_key": "{AWS_SECRET}", "bucket": "models"}}', AWS_SECRET),
    (f"credentials look like {AWS_SECRET} here", AWS_SECRET),
    ("access key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
    ("Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6", "eyJhbGciOiJSUzI1NiIsImtpZCI6"),
    ("s3 endpoint http://admin:hunter22@127.0.0.1:18333/", "hunter22"),
    ("db_password = 'p4ssw0rd!' retry", "p4ssw0rd!"),
    ("--api-key=sk-live-12345678", "sk-live-12345678"),
]


@pytest.mark.parametrize("line, secret", LEAKS, ids=[str(i) for i in range(len(LEAKS))])
def test_redact_masks_secrets(line, secret):
    out = obslog.redact(line)
    assert secret not in out and obslog.MASK in out, out


@pytest.mark.parametrize("line", [
    "rolled out version 3 of digits (2/2 replicas ready)",
    "published s3://models/digits/optimized/3/variables/variables.data-00000-of-00001",
    "Secret model-store not found in namespace ml",
    "Job digits-opt-3-1a2b3c4d succeeded",
    "uid 4f0c5a7e-1b2d-4c3e-9f8a-0123456789ab",
])
def test_redact_keeps_ordinary_lines(line):
    assert obslog.redact(line) == line


def test_masked_json_stays_json():
    masked = obslog.redact(json.dumps({"AWS_SECRET_ACCESS_KEY": ENV_SECRET, "version": 3}))
    assert json.loads(masked) == {"AWS_SECRET_ACCESS_KEY": obslog.MASK, "version": 3}


def test_registered_and_env_values_are_masked_anywhere():
    obslog.register_env_secrets({"MY_SERVICE_PASSWORD": "correct-horse-battery", "HOME": "/root"})
    out = obslog.redact("connecting with correct-horse-battery to /root")
    assert "correct-horse-battery" not in out and "/root" in out
    obslog.register_secret("abc")       # too short to mask safely: ignored
    assert obslog.redact("abc") == "abc"


@pytest.fixture
def capture(monkeypatch):
    """configure_logging into a buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    buf = io.StringIO()

    def configure(fmt):
        obslog.configure_logging(fmt, "DEBUG", stream=buf)
        return buf
    yield configure
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def _object_logger(namespace="ml", name="digits", post_logs=False):
    body = kopf.Body({"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment",
                      "metadata": {"name": name, "namespace": namespace, "uid": "u-1"}})
    settings = kopf.OperatorSettings()
    settings.posting.loggers = post_logs
    return kopf.ObjectLogger(body=body, settings=settings)


def test_json_lines_carry_namespace_and_name(capture):
    buf = capture("json")
    _object_logger().info("rolled out version %d", 3)
    logging.getLogger("modeldeploy.controller").warning("plain", extra={"namespace": "ns2", "md_name": "m2"})
    logging.getLogger("modeldeploy").info("operator started")
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(r["namespace"], r["name"], r["message"]) for r in lines] == [
        ("ml", "digits", "rolled out version 3"), ("ns2", "m2", "plain"), (None, None, "operator started")]
    assert lines[0]["level"] == "info" and lines[1]["level"] == "warning"
    assert lines[0]["logger"] == "kopf.objects" and lines[0]["time"].endswith("Z")


def test_text_lines_are_prefixed_with_the_object(capture):
    buf = capture("text")
    _object_logger().info("rolled out")
    assert "[ml/digits] rolled out" in buf.getvalue()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_secret_in_messages_args_or_tracebacks(capture, fmt):
    buf = capture(fmt)
    log = _object_logger()
    log.info("env %s", {"AWS_SECRET_ACCESS_KEY": ENV_SECRET})
    log.warning(f"pod env [{{'name': 'AWS_SECRET_ACCESS_KEY', 'value': '{ENV_SECRET}'}}]")
    try:
        raise RuntimeError(f"S3 refused key {AWS_SECRET}")
    except RuntimeError:
        log.exception("upload failed")
    # The literal value leaks nowhere, even where no pattern would catch it: it is a registered env value.
    logging.getLogger("x").info("value alone: " + ENV_SECRET)
    out = buf.getvalue()
    assert ENV_SECRET not in out and AWS_SECRET not in out
    assert "upload failed" in out and "RuntimeError" in out
    if fmt == "json":
        assert all(json.loads(line) for line in out.splitlines())


def test_events_kopf_posts_are_redacted(capture, monkeypatch):
    """With settings.posting.loggers, Kopf posts ObjectLogger messages as Kubernetes Events: masked as well."""
    from kopf._core.engines import posting
    posted = []
    monkeypatch.setattr(posting, "enqueue", lambda **kw: posted.append(kw["message"]))
    capture("json")
    _object_logger(post_logs=True).info(f"using AWS_SECRET_ACCESS_KEY={ENV_SECRET}")
    assert posted and ENV_SECRET not in posted[0] and "AWS_SECRET_ACCESS_KEY=***" in posted[0]


def test_configure_twice_keeps_one_handler(capture):
    capture("json")
    capture("json")
    ours = [h for h in logging.getLogger().handlers if isinstance(h, obslog._ObsHandler)]
    assert len(ours) == 1


@pytest.mark.parametrize("fmt, level, field", [("xml", "INFO", "--log-format"), ("json", "LOUD", "--log-level")])
def test_bad_options_name_the_flag(fmt, level, field):
    with pytest.raises(ValueError, match=field):
        obslog.configure_logging(fmt, level)


def test_status_messages_are_redacted_and_secret_values_read_are_masked():
    from modeldeploy.controller import obslog as ol
    ol.register_secret("tenant-s3cr3t-value")
    status = {"conditions": [{"type": "Degraded", "message": "init container exited: key tenant-s3cr3t-value"},
                             {"type": "Ready", "message": "AWS_SECRET_ACCESS_KEY=abc123xyz"}],
              "rollback": {"lastMessage": "Authorization: Bearer abcdefghijklmnop"},
              "model": {"uri": "s3://models/digits/base"}}
    out = ol.redact_messages(status)
    text = repr(out)
    assert "tenant-s3cr3t-value" not in text and "abc123xyz" not in text and "abcdefghijklmnop" not in text
    assert out["model"] == {"uri": "s3://models/digits/base"} and out["conditions"][0]["type"] == "Degraded"
    assert status["conditions"][0]["message"].endswith("tenant-s3cr3t-value")     # the input is not changed


def test_a_storage_secrets_key_values_are_masked_but_not_its_region_or_endpoint(monkeypatch):
    """What the operator reads from a storageSecret: the keys are masked from then on, the region and endpoint
    stay readable in messages."""
    import base64
    from modeldeploy.controller import apply
    from modeldeploy.controller import obslog as ol
    data = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-from-a-secret", "AWS_REGION": "eu-north-1",
            "AWS_ENDPOINT_URL": "http://minio.storage:9000"}
    kube = apply.Kube(None)
    monkeypatch.setattr(kube, "get", lambda kind, ns, name: {"data": {
        k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
    assert kube.secret_data("ml", "model-store") == data
    text = ol.redact("key s3cr3t-from-a-secret in eu-north-1 at http://minio.storage:9000")
    assert "s3cr3t-from-a-secret" not in text and "eu-north-1" in text and "http://minio.storage:9000" in text
