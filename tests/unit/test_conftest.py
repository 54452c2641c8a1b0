"""tests/conftest.py's ordering hook: tests marked session_end (they judge what the whole session did) run after
every other test, whatever their names and wherever they were collected."""
from __future__ import annotations

from tests import conftest


class _Item:
    def __init__(self, name: str, session_end: bool = False):
        self.name, self.session_end = name, session_end

    def get_closest_marker(self, name: str):
        return object() if name == "session_end" and self.session_end else None


def test_session_end_tests_go_last_in_their_collected_order():
    items = [_Item("a_rbac", True), _Item("b"), _Item("c_other_summary", True), _Item("d"), _Item("zz_e")]
    conftest.pytest_collection_modifyitems(items)
    assert [i.name for i in items] == ["b", "d", "zz_e", "a_rbac", "c_other_summary"]


def test_no_session_end_test_leaves_the_order_alone():
    items = [_Item("b"), _Item("a")]
    conftest.pytest_collection_modifyitems(items)
    assert [i.name for i in items] == ["b", "a"]
