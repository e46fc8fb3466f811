"""Action grammar: canonical round trips, clear refusals, and the motion each action means."""
import math

import pytest

from spec_edge_cloud.control.actions import (
    ACTION_WORDS, DEGREE_WORDS, METRE_WORDS, VERBS, Action, ActionError, MotionSpeeds, Segment,
    action_segments, forced_next, format_action, parse_action, parse_answer)


def every_action():
    for m in METRE_WORDS:
        yield f"walk {m}"
        yield f"back {m}"
        for d in ("left", "right"):
            yield f"strafe {d} {m}"
    for deg in DEGREE_WORDS:
        for d in ("left", "right"):
            yield f"turn {d} {deg}"
    yield from ("stop", "stand", "sit")


def test_every_action_round_trips_through_text():
    texts = list(every_action())
    assert len(texts) == 50 * 4 + 36 * 2 + 3
    for text in texts:
        a = parse_action(text)
        assert format_action(a) == str(a) == text
        assert parse_action(text + " .") == a
        assert Action(a.verb, a.direction, a.amount) == a


def test_vocabulary_constants_cover_the_grammar():
    assert METRE_WORDS[0] == "0.1" and METRE_WORDS[-1] == "5.0" and len(METRE_WORDS) == 50
    assert DEGREE_WORDS[0] == "5" and DEGREE_WORDS[-1] == "180" and len(DEGREE_WORDS) == 36
    words = {w for t in every_action() for w in t.split()}
    assert words | {"."} == set(ACTION_WORDS)
    assert set(VERBS) == {"walk", "back", "strafe", "turn", "stop", "stand", "sit"}


def test_parse_answer_splits_observation_and_actions():
    obs, actions = parse_answer("red ball ahead left . turn left 25 . walk 1.2 . stop .")
    assert obs == "red ball ahead left"
    assert actions == [Action("turn", "left", 25), Action("walk", amount=1.2), Action("stop")]
    assert parse_answer("nothing to do .") == ("nothing to do", [])


@pytest.mark.parametrize("sentence, fragment", [
    ("walk 99999", "walk 99999"), ("walk 0.0", "0.1..5.0"), ("walk -1.0", "walk -1.0"),
    ("walk 1.25", "one decimal"), ("walk 1", "canonically"), ("walk 1.20", "canonically"),
    ("walk nan", "finite"), ("walk inf", "finite"), ("walk", "expected `walk M`"),
    ("turn left -90", "multiple of 5"), ("turn left 27", "multiple of 5"), ("turn left 185", "5..180"),
    ("turn left 25.0", "canonically"), ("turn up 25", "left|right"), ("turn 25", "expected `turn"),
    ("strafe left 9.9", "0.1..5.0"), ("jump", "unknown verb 'jump'"), ("stop now", "no arguments"),
    ("", "empty action"), ("walk one", "'one' is not a number"),
])
def test_bad_actions_are_refused_with_a_message_naming_them(sentence, fragment):
    with pytest.raises(ActionError) as err:
        parse_action(sentence)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("text, fragment", [
    ("red ball . walk 1.2", "unterminated sentence 'walk 1.2'"),
    ("", "empty answer"),
    ("red ball . . walk 1.0 .", "empty sentence"),
    ("red ball . jump .", "'jump'"),
    ("red ball . walk 99999 .", "'walk 99999'"),
    ("walk 1.0 . stop .", "is an action"),
    ("Red ball . stop .", "lower case"),
])
def test_parse_answer_errors_are_clear(text, fragment):
    with pytest.raises(ActionError, match=None) as err:
        parse_answer(text)
    assert fragment in str(err.value)


def test_actions_cannot_be_built_out_of_range():
    for bad in [dict(verb="walk", amount=6.0), dict(verb="turn", direction="left", amount=7),
                dict(verb="stop", amount=1.0), dict(verb="walk", direction="left", amount=1.0),
                dict(verb="fly"), dict(verb="walk", amount=float("nan")), dict(verb="walk", amount=True)]:
        with pytest.raises(ActionError):
            Action(**bad)


def test_segments_follow_ros_conventions_and_speeds():
    s = MotionSpeeds(walk=0.5, strafe=0.25, turn=1.0)
    assert action_segments(parse_action("walk 1.0"), s) == [Segment(0.5, 0.0, 0.0, 2.0)]
    assert action_segments(parse_action("back 0.5"), s) == [Segment(-0.5, 0.0, 0.0, 1.0)]
    assert action_segments(parse_action("strafe left 0.5"), s) == [Segment(0.0, 0.25, 0.0, 2.0)]
    assert action_segments(parse_action("strafe right 0.5"), s) == [Segment(0.0, -0.25, 0.0, 2.0)]
    (left,) = action_segments(parse_action("turn left 90"), s)
    (right,) = action_segments(parse_action("turn right 90"), s)
    assert left.vyaw == 1.0 and right.vyaw == -1.0 and math.isclose(left.duration, math.pi / 2)
    assert action_segments(parse_action("stop")) == [Segment(0.0, 0.0, 0.0, 0.0)]
    assert action_segments(parse_action("stand")) == [] and action_segments(parse_action("sit")) == []


def test_motion_speeds_must_be_positive():
    with pytest.raises(ValueError, match="walk"):
        MotionSpeeds(walk=0.0)
    with pytest.raises(ValueError, match="turn"):
        MotionSpeeds(turn=float("inf"))


@pytest.mark.parametrize("answer,forced", [
    ("red ball ahead left", None),               # the observation may say anything
    ("stop", None),                              # ... even an action's words
    ("red ball ahead left . turn left", None),   # an angle must follow, any of them
    ("red ball ahead left . turn left 25", "."),
    ("red ball ahead left . walk 1.2", "."),
    ("no ball . stop", "."),
    ("no ball . stop .", None),                  # a new sentence, or the end
    ("no ball . walk 1", None),                  # not canonical: not an action (a split number, say)
    ("no ball . walk 1.0 . strafe right 0.5", "."),
])
def test_forced_next_is_the_period_that_ends_a_complete_action(answer, forced):
    assert forced_next(answer.split()) == forced
