"""A reference profile named by a `retrain-events` message is read only from the model store."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.references import ReferenceUnavailable, store_path


def test_a_path_inside_the_store_is_read(tmp_path: Path):
    assert store_path(tmp_path, "m1/3/reference.profile") == (tmp_path / "m1/3/reference.profile").resolve()


@pytest.mark.parametrize("named", ["/etc/passwd", "../outside.profile", "m1/../../outside.profile", "link/x"])
def test_a_path_leaving_the_store_is_refused(tmp_path: Path, named: str):
    store = tmp_path / "store"
    store.mkdir()
    (store / "link").symlink_to(tmp_path)
    with pytest.raises(ReferenceUnavailable, match="outside the model store"):
        store_path(store, named)
