"""TF-style log lines on stderr: '<date> <time>: I <source>] message' (what the real server prints)."""
from __future__ import annotations

import datetime
import sys
import threading

_LOCK = threading.Lock()


def log(level: str, source: str, message: str) -> None:
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
    with _LOCK:
        sys.stderr.write(f"{now}: {level} {source}] {message}\n")
        sys.stderr.flush()


def info(source: str, message: str) -> None:
    log("I", source, message)


def warning(source: str, message: str) -> None:
    log("W", source, message)


def error(source: str, message: str) -> None:
    log("E", source, message)
