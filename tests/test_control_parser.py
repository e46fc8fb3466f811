"""Incremental parser: each action appears exactly when its final "." is fed, bad sentences are
rejected without stopping the parse, and the result agrees with the whole-answer parser."""
from spec_edge_cloud.control.actions import parse_action, parse_answer
from spec_edge_cloud.control.parser import ActionReady, IncrementalParser, Observation, Rejected


def feed_all(parser, text):
    """Per word, the events it produced."""
    return [(w, parser.feed(w)) for w in text.split()]


def test_each_action_is_emitted_exactly_when_its_period_arrives():
    text = "red ball ahead left . turn left 25 . walk 1.2 . stop ."
    steps = feed_all(IncrementalParser(), text)
    emitted_at = [i for i, (_, events) in enumerate(steps) if events]
    assert emitted_at == [i for i, w in enumerate(text.split()) if w == "."]
    events = [e for _, ev in steps for e in ev]
    assert events == [Observation("red ball ahead left"),
                      ActionReady(parse_action("turn left 25"), "turn left 25"),
                      ActionReady(parse_action("walk 1.2"), "walk 1.2"),
                      ActionReady(parse_action("stop"), "stop")]
    obs, actions = parse_answer(text)
    assert [e.action for e in events[1:]] == actions and events[0].text == obs


def test_bad_sentences_are_rejected_and_parsing_continues():
    p = IncrementalParser()
    events = [e for _, ev in feed_all(p, "box . jump . walk 99999 . turn left -90 . . walk 1.0 .") for e in ev]
    assert isinstance(events[0], Observation)
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert [r.sentence for r in rejected] == ["jump", "walk 99999", "turn left -90", ""]
    assert "unknown verb 'jump'" in rejected[0].reason and "lone" in rejected[3].reason
    assert events[-1] == ActionReady(parse_action("walk 1.0"), "walk 1.0")


def test_an_action_as_first_sentence_is_not_executed():
    events = [e for _, ev in feed_all(IncrementalParser(), "walk 1.0 . walk 2.0 .") for e in ev]
    assert isinstance(events[0], Rejected) and "observation" in events[0].reason
    assert events[1] == ActionReady(parse_action("walk 2.0"), "walk 2.0")


def test_finish_rejects_an_unterminated_sentence_and_reset_starts_over():
    p = IncrementalParser()
    feed_all(p, "ball . walk 1")
    (cut,) = p.finish()
    assert cut == Rejected("walk 1", "unterminated at end of response")
    assert p.finish() == []
    assert p.feed("walk") == [] and p.feed(".") == [Observation("walk")]  # finish() reset it
    p.feed("walk")
    p.reset()
    assert p.feed("ball") == [] and p.feed(".") == [Observation("ball")]  # "walk" was forgotten


def test_token_texts_with_spaces_and_multiple_words():
    p = IncrementalParser()
    assert p.feed(" ball ") == [] and p.feed(" .") == [Observation("ball")]
    assert p.feed("walk 1.0 .") == [ActionReady(parse_action("walk 1.0"), "walk 1.0")]
    assert p.feed("") == [] and p.feed("   ") == []


def test_overlong_sentence_is_rejected_once_and_memory_stays_bounded():
    p = IncrementalParser(max_sentence_words=8)
    p.feed("obs"), p.feed(".")
    events = [e for _ in range(1000) for e in p.feed("walk")]
    assert len(events) == 1 and isinstance(events[0], Rejected) and "longer than 8" in events[0].reason
    assert len(p._words) == 8
    assert p.feed(".") == []  # the overflowed sentence ends silently
    assert p.feed("stop") == [] and p.feed(".") == [ActionReady(parse_action("stop"), "stop")]


def test_unverified_words_taint_their_sentence_only():
    p = IncrementalParser()
    p.feed("ball"), p.feed(".")
    for w in "walk 1.0".split():
        p.feed(w, verified=False)
    (ev,) = p.feed(".")
    assert isinstance(ev, Rejected) and "unverified" in ev.reason
    p.feed("walk"), p.feed("1.0")
    assert p.feed(".", verified=False)[0].__class__ is Rejected  # an unverified period counts too
    p.feed("stop")
    assert p.feed(".") == [ActionReady(parse_action("stop"), "stop")]
