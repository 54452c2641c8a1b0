"""Structured logs with the object on every line, and no secret ever written.

Interface (stable, see /work/notes/OBS.md):

- `configure_logging(fmt="text"|"json", level="INFO")`: one stderr handler on the root logger. JSON lines
  carry time, level, logger, message, namespace and name (and exc when there is a traceback); text lines are
  prefixed `[namespace/name]`. namespace/name come from Kopf's ObjectLogger (`record.k8s_ref`, the `logger`
  handlers receive) or from `extra={"namespace": ..., "md_name": ...}` (LogRecord reserves `name`). The
  redaction filter goes on that handler and on Kopf's Event poster, so messages Kopf posts as Kubernetes Events are masked as well.
- `redact(text) -> str`: masks secrets in a string. `register_secret(value)`: mask this literal value too.
- `redact_messages(status)`: the same for every condition and rollback message written to status.
- `RedactingFilter`: the logging.Filter doing it to a record (message, args, traceback).

What counts as a secret: AWS access key ids and secret-key-shaped strings; the value after any name containing
SECRET, TOKEN, PASSWORD, PASSWD, KEY or CREDENTIAL (`X_KEY=v`, `"x_token": "v"`, `{'name': 'X_KEY', 'value':
'v'}` as Kubernetes env lists print); Bearer/Basic authorization values; passwords in URLs (`user:pw@host`);
and the literal values of this process's environment variables with such names (AWS_SECRET_ACCESS_KEY...).
Over-masking is accepted: a log line that lost a harmless value costs less than a leaked key.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from datetime import datetime, timezone

MASK = "***"
FORMATS = ("text", "json")

_SECRET_WORDS = r"(?:SECRET|TOKEN|PASSWORD|PASSWD|KEY|CREDENTIAL)"
_NAME = rf"[A-Za-z0-9_.\-]*{_SECRET_WORDS}[A-Za-z0-9_.\-]*"
_Q = r"""['"]?"""
# A value: quoted (up to the closing quote) or bare (up to whitespace, comma, brace or quote); a nested
# object or list is not a value (`secretKeyRef: {...}` names where a secret is, it holds none).
_VALUE = r"""(?:"[^"]*"|'[^']*'|(?![\[{(])[^\s,;'"}\]\)]+)"""



def _masked(value: str) -> str:
    """*** keeping the value's quotes, so masked JSON or Python reprs stay well-formed."""
    q = value[:1]
    return f"{q}{MASK}{q}" if q in ("'", '"') and len(value) > 1 and value.endswith(q) else MASK


_PATTERNS: list[tuple[re.Pattern, object]] = [
    # Kubernetes env entries: {'name': 'AWS_SECRET_ACCESS_KEY', 'value': 'xyz'} (and the JSON form).
    (re.compile(rf"""(?i)({_Q}name{_Q}\s*[:=]\s*{_Q}{_NAME}{_Q}\s*,\s*{_Q}value{_Q}\s*[:=]\s*)({_VALUE})"""),
     lambda m: m.group(1) + _masked(m.group(2))),
    # name=value, name: value, "name": "value", name='value'.
    (re.compile(rf"""(?i)(\b{_NAME}{_Q}\s*[:=]\s*)({_VALUE})"""), lambda m: m.group(1) + _masked(m.group(2))),
    (re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9\-._~+/=]{8,}"), rf"\1 {MASK}"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]+:)[^\s@/]+@"), rf"\1{MASK}@"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),
    # AWS secret access keys: 40 base64 characters. Mixed case plus a digit keeps ordinary long lowercase
    # paths (models/digits/optimized/3/variables) readable.
    (re.compile(r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+=]*[A-Z])(?=[A-Za-z0-9/+=]*[a-z])(?=[A-Za-z0-9/+=]*[0-9])"
                r"[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"), MASK),
]
_ENV_NAME = re.compile(rf"(?i){_SECRET_WORDS}")
_MIN_LITERAL = 4          # shorter values ("1", "yes") would mask half of every line
_literals: set[str] = set()
_literals_lock = threading.Lock()
_literal_re: re.Pattern | None = None


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears (values shorter than 4 characters are ignored)."""
    global _literal_re
    if not value or len(value) < _MIN_LITERAL:
        return
    with _literals_lock:
        if value in _literals:
            return
        _literals.add(value)
        # Longest first, so a secret that contains another is masked whole.
        _literal_re = re.compile("|".join(re.escape(v) for v in sorted(_literals, key=len, reverse=True)))


def register_env_secrets(environ=None) -> None:
    """Register the values of environment variables whose names look secret (AWS_SECRET_ACCESS_KEY...)."""
    for name, value in (os.environ if environ is None else environ).items():
        if _ENV_NAME.search(name):
            register_secret(value)


def redact(text: str) -> str:
    """The text with every secret-looking part replaced by ***."""
    if not text:
        return text
    literal_re = _literal_re
    if literal_re is not None:
        text = literal_re.sub(MASK, text)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact_messages(obj):
    """A copy of `obj` (status, or part of it) with every `message`/`lastMessage` string redacted: they carry
    container termination messages and API errors, which may quote a secret."""
    if isinstance(obj, dict):
        return {k: redact(v) if k in ("message", "lastMessage") and isinstance(v, str) else redact_messages(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_messages(v) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and traceback with secrets masked; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_md_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:          # a broken %-format: keep the raw template rather than losing the line
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None     # the formatter must use the masked text, not format the traceback again
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._md_redacted = True
        return True


def object_of(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """(namespace, name) of the object a record is about: Kopf's k8s_ref, else extra namespace/name."""
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name"):
        return ref.get("namespace"), ref.get("name")
    # `name` is taken on a LogRecord (the logger's name), so callers pass the object's name as extra md_name.
    return getattr(record, "namespace", None), getattr(record, "md_name", None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, namespace, name, exc."""

    def format(self, record: logging.LogRecord) -> str:
        namespace, name = object_of(record)
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "namespace": namespace,
            "name": name,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = redact(record.exc_text)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: [namespace/name] message`, secrets masked."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        namespace, name = object_of(record)
        line = super().format(record)
        if name:
            prefix = f"[{namespace}/{name}] " if namespace else f"[{name}] "
            head, sep, tail = line.partition(": ")
            line = f"{head}{sep}{prefix}{tail}" if sep else prefix + line
        return redact(line)


class _ObsHandler(logging.StreamHandler):
    """Our stderr handler (a class of its own so a second configure_logging replaces it)."""


def _kopf_posters() -> list[logging.Handler]:
    """Kopf's handlers that post log messages as Kubernetes Events (on the 'kopf.objects' logger)."""
    try:
        from kopf._core.engines import posting     # private module, hence the guard
    except Exception:
        return []
    return [h for h in logging.getLogger("kopf.objects").handlers if isinstance(h, posting.K8sPoster)]


def configure_logging(fmt: str = "text", level: str | int = "INFO", stream=None) -> logging.Handler:
    """Install the structured, redacting stderr handler on the root logger; returns it."""
    fmt = (fmt or "text").lower()
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)} (MODELDEPLOY_LOG_FORMAT / "
                         f"--log-format), got {fmt!r}")
    if isinstance(level, str):
        numeric = logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"log level must be DEBUG, INFO, WARNING or ERROR (MODELDEPLOY_LOG_LEVEL / "
                             f"--log-level), got {level!r}")
        level = numeric
    register_env_secrets()
    handler = _ObsHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    # Replace earlier handlers of ours and basicConfig's, so each line is written once and formatted our way.
    root.handlers[:] = [h for h in root.handlers
                        if not isinstance(h, _ObsHandler) and type(h) is not logging.StreamHandler]
    root.addHandler(handler)
    root.setLevel(level)
    for poster in _kopf_posters():
        if not any(isinstance(f, RedactingFilter) for f in poster.filters):
            poster.addFilter(RedactingFilter())
    return handler
