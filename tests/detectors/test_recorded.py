"""Today's monitor against outputs recorded before its signals moved onto one contract
(main at e737e01, ``tests/detectors/recorded_streams.py``): the same decisions, snapshots
and saved states, and the states saved then still load and continue the same way.

The decisions were recorded again when the data-quality signals joined (their tests
take a share of ``target_arl``, so every threshold moved a little); the states saved
before the contract are those of e737e01."""

import gzip
import json

import pytest

from detectors import ModelMonitor, _monitor_state
from detectors._state import pack, unpack

from . import recorded_streams as rec

RECORDED = json.loads(gzip.decompress(rec.DECISIONS_FILE.read_bytes()))


@pytest.mark.parametrize("key", [k for k in RECORDED if not k.startswith("continued_from")])
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
    # saved again, it is the state read, plus the signals it predates (fresh)
    old = unpack(_monitor_state._STATE_KIND, rec.STATE_FILE.read_bytes())
    assert _without_new(mon.state_to_bytes()) == pack(_monitor_state._STATE_KIND, old)
    assert rec.continuation(mon) == RECORDED[f"continued_from_saved_{form}"]



def _without_new(state: bytes) -> dict:
    """A saved state without the signals that came after the recorded one: their
    states and their persistence rows (after the older sequential signals')."""
    body = unpack(_monitor_state._STATE_KIND, state)
    old = unpack(_monitor_state._STATE_KIND, rec.STATE_FILE.read_bytes())
    body.pop("signals", None)
    body["hist"]["seq"] = body["hist"]["seq"][:len(old["hist"]["seq"])]
    return pack(_monitor_state._STATE_KIND, body)
