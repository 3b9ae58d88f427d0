"""Today's monitor against outputs recorded before its signals moved onto one contract
(main at e737e01, ``tests/detectors/recorded_streams.py``): the same decisions, snapshots
and saved states, and the states saved then still load and continue the same way."""

import gzip
import json

import pytest

from detectors import ModelMonitor

from . import recorded_streams as rec

RECORDED = json.loads(gzip.decompress(rec.DECISIONS_FILE.read_bytes()))


@pytest.mark.parametrize("key", [k for k in RECORDED if k != "continued_from_saved_state"])
def test_decisions_snapshots_and_states_are_the_recorded_ones(key):
    order, name, cuts = key.split("/")
    mon = ModelMonitor(rec.profile(shuffled=order == "shuffled"), rec.CONFIGS[name])
    assert rec.feed(mon, *rec.stream(7), list(rec.CUTS[int(cuts[-1])])) == RECORDED[key]


@pytest.mark.parametrize("form", ["state", "full"])
def test_a_state_saved_before_the_signal_contract_loads_and_continues(form):
    if form == "state":
        mon = ModelMonitor.from_state(rec.profile(), rec.STATE_FILE.read_bytes(),
                                      config=rec.CONFIGS["persistence"])
    else:
        mon = ModelMonitor.from_bytes(rec.FULL_FILE.read_bytes())
    assert mon.state_to_bytes() == rec.saved_monitor().state_to_bytes()
    assert rec.continuation(mon) == RECORDED["continued_from_saved_state"]
