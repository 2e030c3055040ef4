"""The suite's own rules: what the fast lane leaves out and what the unit folder may hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from shared_fixtures import UNIT_FOLDER, needs_server_or_checkpoint, unit_folder_breaches

TESTS = UNIT_FOLDER.parent


@dataclass
class Item:
    """What the rules read of a collected test."""

    path: Path
    fixturenames: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    nodeid: str = field(default="")

    def __post_init__(self) -> None:
        self.nodeid = self.nodeid or f"{self.path.name}::t"

    def get_closest_marker(self, name: str):
        return object() if name in self.markers else None


@pytest.mark.parametrize(
    ("fixtures", "markers", "slow"),
    [
        ((), (), False),
        (("tmp_path", "monkeypatch"), (), False),
        (("server",), (), True),
        (("tiny_checkpoint",), (), True),
        (("upstream", "tiny_checkpoint"), (), True),
        (("random_checkpoint",), (), True),
        (("asr_checkpoint",), (), True),
        ((), ("integration",), True),
        ((), ("requires_cuda",), False),
    ],
)
def test_the_fast_lane_leaves_out_servers_and_checkpoints(fixtures, markers, slow):
    item = Item(TESTS / "model" / "test_x.py", fixtures, markers)
    assert needs_server_or_checkpoint(item) is slow


def test_the_unit_folder_holds_no_test_needing_a_server_or_a_checkpoint():
    fine = Item(UNIT_FOLDER / "test_a.py", ("tmp_path",))
    model = Item(TESTS / "model" / "test_b.py", ("upstream",))
    server = Item(TESTS / "server" / "test_c.py", markers=("integration",))
    client = Item(TESTS.parent / "client" / "tests" / "test_d.py", ("server",))
    assert unit_folder_breaches([fine, model, server, client]) == []
    breach = Item(UNIT_FOLDER / "test_e.py", ("tiny_checkpoint",), nodeid="tests/unit/test_e.py::t")
    marked = Item(UNIT_FOLDER / "sub" / "test_f.py", markers=("integration",), nodeid="f")
    assert unit_folder_breaches([fine, breach, marked]) == ["tests/unit/test_e.py::t", "f"]
