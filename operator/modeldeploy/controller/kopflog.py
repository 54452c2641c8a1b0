"""What the operator reads from Kopf's log, in one place: Kopf 1.45 has no public hook for either.

- The pause of peering: Kopf stops calling handlers while another replica with a higher priority works, but
  offers no signal for our own loop (the monitor). Its peering engine logs every transition ("Pausing
  operations in favour of ...", "Pausing all operators, including self: ...", "Resuming operations after the
  pause. ..."), which is that signal. Without peering (--standalone) nothing is logged and the monitor runs.
- The noise: Kopf logs "Handler 'x' succeeded." at INFO after every call of an event handler, that is after every
  watch event of every ModelDeployment.

tests/unit/test_kopflog.py pins both to the installed Kopf: its version, and these messages in its source.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

PEERING_LOGGER = "kopf._core.engines.peering"
HANDLERS_LOGGER = "kopf.objects"
PAUSING, RESUMING = "Pausing ", "Resuming operations"
SUCCEEDED_SUFFIX = " succeeded."


class _Pause(logging.Handler):
    def __init__(self, set_paused: Callable[[bool], None]):
        super().__init__()
        self.set_paused = set_paused

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(PAUSING):
            self.set_paused(True)
        elif message.startswith(RESUMING):
            self.set_paused(False)


class _Quiet(logging.Filter):
    def __init__(self, handler_ids: Iterable[str]):
        super().__init__()
        self.quoted = tuple(f"'{h}'" for h in handler_ids)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage() if record.levelno <= logging.INFO else ""
        return not (msg.startswith("Handler ") and msg.endswith(SUCCEEDED_SUFFIX) and any(q in msg for q in self.quoted))


def on_peering_pause(set_paused: Callable[[bool], None]) -> None:
    """Call `set_paused(True/False)` as Kopf's peering pauses and resumes this replica."""
    log = logging.getLogger(PEERING_LOGGER)
    log.addHandler(_Pause(set_paused))
    log.setLevel(logging.INFO)       # rare messages, and the pause signal must not depend on --log-level


def quiet_success_of(handler_ids: Iterable[str]) -> None:
    """Drop Kopf's INFO "Handler '<id>' succeeded." lines of these handlers."""
    logging.getLogger(HANDLERS_LOGGER).addFilter(_Quiet(handler_ids))
