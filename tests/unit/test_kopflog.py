"""controller/kopflog.py reads Kopf's log because Kopf 1.45 has no public hook for the pause of peering or for
its per-event "succeeded" lines. Pinned here to the installed Kopf: the version in pyproject.toml, and the
messages in Kopf's own source, so a Kopf upgrade that changes them fails this test instead of silently leaving
a paused replica working beside the active one."""
from __future__ import annotations

import importlib.metadata
import inspect
import logging
import pathlib
import re

import kopf._core.actions.execution as kopf_execution
import kopf._core.engines.peering as kopf_peering

from modeldeploy.controller import kopflog

PYPROJECT = pathlib.Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_installed_kopf_is_the_pinned_one():
    pinned = re.search(r'"kopf==([^"]+)"', PYPROJECT.read_text()).group(1)
    assert importlib.metadata.version("kopf") == pinned == "1.45.2", "re-read Kopf's peering and handler logs"


def test_kopfs_source_still_logs_what_the_adapter_reads():
    peering = inspect.getsource(kopf_peering)
    assert kopf_peering.__name__ == kopflog.PEERING_LOGGER or "getLogger(__name__)" in peering
    assert f'logger.info(f"{kopflog.PAUSING}operations in favour of' in peering
    assert f'logger.warning(f"{kopflog.PAUSING}all operators, including self' in peering
    assert f'logger.info(f"{kopflog.RESUMING} after the pause.' in peering
    assert f'logger.info(f"{{handler}}{kopflog.SUCCEEDED_SUFFIX}")' in inspect.getsource(kopf_execution)


def test_pause_and_resume_reach_the_monitor():
    seen = []
    kopflog.on_peering_pause(seen.append)
    log = logging.getLogger(kopflog.PEERING_LOGGER)
    log.info("Pausing operations in favour of [<Peer a>].")
    log.warning("Pausing all operators, including self: [<Peer b>]")
    log.info("Resuming operations after the pause. Conflicting operators with the same priority are gone.")
    log.info("Keep-alive in 'default' cluster-wide: ok.")
    assert seen == [True, True, False]


def test_only_the_named_handlers_success_lines_are_dropped(caplog):
    kopflog.quiet_success_of(["md_event"])
    log = logging.getLogger(kopflog.HANDLERS_LOGGER)
    with caplog.at_level(logging.INFO, logger=kopflog.HANDLERS_LOGGER):
        log.info("Handler 'md_event' succeeded.")
        log.info("Handler 'other' succeeded.")
        log.error("Handler 'md_event' failed with an exception. Will retry.")
    assert [r.getMessage() for r in caplog.records] == ["Handler 'other' succeeded.",
                                                         "Handler 'md_event' failed with an exception. Will retry."]
