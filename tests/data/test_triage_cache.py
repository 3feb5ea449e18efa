"""The triage remembers image verdicts: unchanged files are not decoded again, changed files are."""

from __future__ import annotations

import pytest
from tests.data.fixtures import write_part_dataset

from wps_sam.data import checks
from wps_sam.data.checks import report_of, triaged_split
from wps_sam.data.triage_cache import VerdictStore


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """The data set, a private triage cache, and the paths ``inspect_image`` decodes."""
    monkeypatch.setenv("WPS_SAM_TRIAGE_CACHE", str(tmp_path / "triage"))
    write_part_dataset(tmp_path / "data", "train", 4, seed=2)
    seen = []
    real = checks.inspect_image
    monkeypatch.setattr(checks, "inspect_image", lambda p, d=True: seen.append(p.name) or real(p, d))
    return tmp_path / "data", seen


def test_a_second_triage_decodes_nothing_and_agrees(counted):
    root, seen = counted
    first = report_of(triaged_split(root, "train"))
    assert len(seen) == 4
    second = report_of(triaged_split(root, "train"))
    assert len(seen) == 4 and second == first
    triaged_split(root, "train", recheck=True)
    assert len(seen) == 8


def test_a_changed_file_is_checked_again(counted):
    root, seen = counted
    triaged_split(root, "train")
    victim = sorted((root / "images" / "train").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated: another size, another verdict
    index = triaged_split(root, "train")
    assert seen[4:] == [victim.name]
    assert [r["file_name"] for r in index.skipped_images] == [victim.name]


def test_a_damaged_store_is_ignored(counted):
    root, seen = counted
    triaged_split(root, "train")
    store = VerdictStore(root / "images" / "train")
    assert len(store.entries) == 4
    store.path.write_text("{not json")
    assert len(triaged_split(root, "train").images) == 4 and len(seen) == 8


def test_check_data_always_decodes(counted):
    root, seen = counted
    checks.check_data(root, "train")
    checks.check_data(root, "train")
    assert len(seen) == 8
    triaged_split(root, "train")  # check-data stored its verdicts
    assert len(seen) == 8


def test_a_file_that_appears_or_an_edited_json_is_seen(counted):
    root, seen = counted
    images = root / "images" / "train"
    victim = sorted(images.iterdir())[0]
    moved = root / victim.name
    victim.rename(moved)  # missing at the first start: skipped
    first = triaged_split(root, "train")
    assert [r["file_name"] for r in first.skipped_images] == [victim.name]
    moved.rename(victim)  # back: the folder changed, the split is triaged again (its verdict decoded)
    assert len(triaged_split(root, "train").images) == 4 and seen.count(victim.name) == 1
    path = root / "annotations" / "train" / "train.json"
    path.write_text(path.read_text().replace('"iscrowd": 0', '"iscrowd": 1', 1))
    crowd = triaged_split(root, "train")
    assert sum(p.iscrowd for e in crowd.images for p in e.parts) == 1 and len(seen) == 4
