"""The report's data-quality section: the missing and unseen-level shares per column over
time, and the new levels the triggers named (rendered as pure code; the browser test of
the whole report is test_report.py)."""

from __future__ import annotations

from streams.report import Timeline, render


def _snapshot(missing: float, unseen: float) -> dict:
    return {"columns": {"a": {"ks_statistic": 0.01, "ks_threshold": 0.1, "missing_share": missing},
                        "pay": {"chi2_statistic": 1.0, "chi2_threshold": 9.0, "missing_share": 0.0,
                                "unseen_share": unseen}}}


def test_the_section_draws_the_shares_and_lists_the_new_levels():
    t = Timeline("m", "regression")
    for x, (miss, new) in enumerate([(0.0, 0.0), (0.4, 0.03), (0.38, 0.05)]):
        t.sample_features(x * 1000, _snapshot(miss, new))
    trigger = {"model_id": "m", "offset": 1017, "source": "features", "severity": "HIGH", "confidence": 1.0,
               "trigger_types": ["data_quality"], "reason": "Data quality detected", "columns": ["pay"],
               "root_cause": [{"signal": "unseen_category", "column": "pay", "strength": 2.5,
                               "detail": {"share": 0.05, "levels": {"crypto": 0.05}}}]}
    t.mark(1017, trigger)
    page = render("r", [], [t], [trigger])
    assert "<h3>Data quality</h3>" in page and "a missing" in page and "pay unseen levels" in page
    assert "<td>crypto</td><td>5.0%</td>" in page and "crypto 5.0%" in page
    assert "No value missing" not in page


def test_a_clean_run_says_nothing_was_missing():
    t = Timeline("m", "regression")
    t.sample_features(0, _snapshot(0.0, 0.0))
    page = render("r", [], [t], [])
    assert "No value missing and no unseen level" in page and '<table class="levels">' not in page
