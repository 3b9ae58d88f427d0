"""The join's pure parts: either side first, expiry, and the input cursor that checks
what the consumer hands over against the saved position."""

from __future__ import annotations

import datetime as dt

from schemas.messages import ActualEvent, PredictionEvent
from streams.join import ExpiryIndex, InputCursor, Pending

T0 = dt.datetime(2026, 11, 26, 6, tzinfo=dt.timezone.utc)
TP = ("predictions", 0)


def _prediction() -> PredictionEvent:
    return PredictionEvent(model_id="m", model_version="2", event_id="e1", timestamp=T0, prediction=1.5,
                           features={"a": 0.5})


def _actual() -> ActualEvent:
    return ActualEvent(model_id="m", model_version="2", event_id="e1",
                       timestamp=T0 + dt.timedelta(minutes=5), actual=2.0)


def test_either_side_first_gives_the_same_labelled_record() -> None:
    prediction, actual = Pending.of(_prediction(), 0, 1.0), Pending.of(_actual(), 0, 2.0)
    assert prediction.completes(actual) and actual.completes(prediction)
    assert not prediction.completes(prediction)
    first, second = prediction.labelled(actual, "e1"), actual.labelled(prediction, "e1")
    assert first == second
    assert (first.prediction, first.actual, first.timestamp, first.actual_timestamp, first.features) == (
        1.5, 2.0, T0, T0 + dt.timedelta(minutes=5), {"a": 0.5})


def test_an_entry_expires_after_the_ttl_in_wall_clock_time() -> None:
    expiry = ExpiryIndex(ttl_seconds=10)
    expiry.add("e1", Pending.of(_actual(), 0, 100.0))
    assert list(expiry.due(105.0)) == []
    assert list(expiry.due(111.0)) == ["e1"]


def test_the_cursor_takes_a_first_run_as_it_comes_and_skips_repeats() -> None:
    cursor = InputCursor()
    assert cursor.admit(TP, 7, lambda: None) == InputCursor.PROCESS
    assert cursor.admit(TP, 8, lambda: None) == InputCursor.PROCESS
    assert cursor.admit(TP, 8, lambda: None) == InputCursor.SKIP  # handed over twice
    assert cursor.next[TP] == 9


def test_after_an_assignment_the_saved_position_decides() -> None:
    cursor = InputCursor()
    assert cursor.admit(TP, 95, lambda: 100) == InputCursor.SKIP  # already processed before the restart
    assert cursor.admit(TP, 100, lambda: 100) == InputCursor.PROCESS


def test_a_skipped_stretch_is_sought_back_and_awaited() -> None:
    cursor = InputCursor()
    assert cursor.admit(TP, 500, lambda: 100) == InputCursor.GAP
    assert cursor.gap_checked(TP, 500, first_record=100) == InputCursor.SKIP  # the log has 100: skipped
    assert cursor.awaiting(TP) and cursor.next[TP] == 100
    assert cursor.admit(TP, 501, lambda: 100) == InputCursor.SKIP  # fetched before the seek
    assert cursor.admit(TP, 100, lambda: 100) == InputCursor.PROCESS
    assert not cursor.awaiting(TP)


def test_a_real_gap_in_the_log_is_accepted() -> None:
    cursor = InputCursor()
    cursor.admit(TP, 10, lambda: None)
    assert cursor.admit(TP, 12, lambda: None) == InputCursor.GAP  # offset 11: a transaction marker
    assert cursor.gap_checked(TP, 12, first_record=12) == InputCursor.PROCESS
    assert cursor.next[TP] == 13 and not cursor.awaiting(TP)


def test_reset_reads_the_saved_position_again() -> None:
    cursor = InputCursor()
    cursor.admit(TP, 10, lambda: None)
    cursor.reset()
    assert cursor.admit(TP, 10, lambda: 50) == InputCursor.SKIP
