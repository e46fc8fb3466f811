"""When the draft node's task ends: "reached" has to be said in a row, each time from a fresh frame."""
import pytest

pytest.importorskip("rclpy")
from spec_edge_cloud.ros.draft_node import Task, observation_reached  # noqa: E402


def test_reached_needs_consecutive_confirmations():
    task = Task("go to the red ball", 1, 0.0)
    assert not task.answered(True, 2)           # one look: keep going
    assert not task.answered(False, 2)          # the next look disagrees: the count starts over
    assert not task.answered(True, 2)
    assert task.answered(True, 2)               # two in a row: done
    assert Task("go to the red ball", 2, 0.0).answered(True, 1)


def test_only_a_reached_observation_counts():
    assert observation_reached("red ball reached . stop .".split())
    assert not observation_reached("red ball ahead . walk 1.2 . stop .".split())
    assert not observation_reached("no red ball in view . turn left 60 .".split())
