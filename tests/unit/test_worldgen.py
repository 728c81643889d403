"""Unit tests of the second evaluation world (tools/worldgen.py): determinism, the record
conventions (ts grid, exact per-link totals, the data gap), the benign calendar (local
holidays, first business days, the 02:00 batch job across DST changes) and that every label
sits where its anomaly was injected, with the effect it claims.

One default run (5 sites, 42 days, 5-minute steps, ~2.9 M rows) is shared by most tests;
the rest use small configurations, so the file takes a few seconds.
"""
import datetime
import json

import numpy as np
import pytest

from ansible_collections.netstack.tuning.tools import worldgen as wg
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError
from ansible_collections.netstack.tuning.plugins.module_utils.traffic.data import CLASS_NAMES, HEADER

SMALL = dict(sites=3, days=12, step=600, rows_per_step=24)


@pytest.fixture(scope="module")
def world():
    return wg.generate(seed=3)


def link_totals(recs, truth):
    """Bytes per (link, step) summed from the rows: {link: int64 array aligned with ts}."""
    ts = truth["ts"]
    step_i = (recs.ints["ts"] - ts[0]) // truth["step"]
    links = recs.strings("link")
    out = {}
    for link in truth["links"]:
        sel = links == link
        out[link] = np.bincount(step_i[sel], weights=recs.ints["bytes"][sel], minlength=len(ts)).astype(np.int64)
    return out


def window(truth, start, end):
    return (truth["ts"] >= start) & (truth["ts"] <= end)


# ------------------------------------------------------------------ determinism, conventions

def test_same_seed_same_world_other_seed_other_world():
    r1, l1, t1 = wg.generate(seed=7, **SMALL)
    r2, l2, t2 = wg.generate(seed=7, **SMALL)
    assert l1 == l2
    for k in HEADER:
        col = r1.ints.get(k)
        if col is None:
            assert np.array_equal(r1.strings(k), r2.strings(k))
        else:
            assert np.array_equal(col, r2.ints[k])
    for link in t1["links"]:
        assert np.array_equal(t1["clean"][link], t2["clean"][link])
        assert np.array_equal(t1["total"][link], t2["total"][link])
    assert t1["holidays"] == t2["holidays"] and t1["gaps"] == t2["gaps"]
    r3, l3, t3 = wg.generate(seed=8, **SMALL)
    assert l3 != l1
    assert len(r3) != len(r1) or not np.array_equal(r3.ints["bytes"], r1.ints["bytes"])


def test_ts_grid_is_step_ends(world):
    recs, _labels, truth = world
    step, start = truth["step"], truth["start"]
    assert start == 1771804800                     # 2026-02-23 00:00 UTC
    n = 42 * 86400 // step
    assert np.array_equal(truth["ts"], start + step * np.arange(1, n + 1))
    assert np.array_equal(np.unique(recs.ints["ts"]), truth["ts"])
    assert np.all(np.diff(recs.ints["ts"]) >= 0)   # rows come ordered by ts
    for link in truth["links"]:
        for name in ("clean", "noise", "burst", "effect", "total"):
            assert len(truth[name][link]) == n


@pytest.mark.parametrize("config", [None, dict(sites=6, days=10, step=3600, start=1772323200, rows_per_step=8)])
def test_per_link_totals_are_exact_sums(world, config):
    recs, _labels, truth = world if config is None else wg.generate(seed=5, **config)
    sums = link_totals(recs, truth)
    for link in truth["links"]:
        assert np.array_equal(sums[link], truth["total"][link])
        # and the total is the product of the truth series, up to integer rounding
        expect = truth["clean"][link] * truth["noise"][link] * truth["effect"][link] * (1 + truth["burst"][link])
        have = truth["total"][link] > 0
        assert np.allclose(truth["total"][link][have], expect[have], rtol=1e-9, atol=1)
    assert recs.ints["bytes"].dtype == np.int64 and recs.ints["bytes"].min() > 0


def test_record_contents(world):
    recs, _labels, truth = world
    assert set(np.unique(recs.ints["proto"])) <= {6, 17}
    assert set(np.unique(recs.ints["dscp"])) <= {0, 10, 46}
    assert set(recs.cats["port_class"]) <= set(CLASS_NAMES)
    assert set(recs.cats["direction"]) == {"in", "out"}
    assert truth["links"] == ["fra:wan", "nyc:wan", "sao:wan", "tyo:wan", "syd:wan"]
    assert sorted(recs.cats["link"]) == sorted(truth["links"])
    v6 = [p for p in recs.cats["prefix"] if ":" in p]
    v4 = [p for p in recs.cats["prefix"] if ":" not in p]
    assert v6 and all(p.startswith("2001:db8:") and p.endswith("::/48") for p in v6)
    assert v4 and all(p.endswith(".0/24") and (p.startswith(("198.18.", "198.19.")) or
                                                p in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")) for p in v4)
    size = recs.ints["bytes"] / recs.ints["packets"]
    assert recs.ints["packets"].min() >= 1 and 80 < np.median(size) < 1500
    # about rows_per_step rows per link-step
    assert len(recs) == pytest.approx(len(truth["ts"]) * 5 * 48, rel=0.02)


def test_direction_split_follows_site_type(world):
    recs, _labels, truth = world
    sel_in = recs.strings("direction") == "in"
    ins = link_totals(recs.take(sel_in), truth)
    for link, site in truth["sites"].items():
        have = truth["total"][link] > 0
        share = ins[link][have] / truth["total"][link][have]
        assert np.median(share) == pytest.approx(site["in_share"], abs=0.04)
        if site["type"] == "residential":      # consumers download
            assert np.median(share) > 0.75
        elif site["type"] == "datacenter":     # servers upload
            assert np.median(share) < 0.5


def test_noise_levels_differ_per_site(world):
    _recs, _labels, truth = world
    sigmas = [s["noise_sigma"] for s in truth["sites"].values()]
    assert min(sigmas) <= 0.08 and max(sigmas) >= 0.3 and all(0.05 <= s <= 0.35 for s in sigmas)
    for link, site in truth["sites"].items():
        measured = np.std(np.log(truth["noise"][link]))
        assert measured == pytest.approx(site["noise_sigma"], rel=0.25)
        assert np.mean(truth["noise"][link]) == pytest.approx(1.0, abs=0.05)


# ------------------------------------------------------------------ the data gap

def test_gap_has_no_records_for_its_link_only(world):
    recs, labels, truth = world
    (gap,) = truth["gaps"]
    assert 2 * 3600 <= gap["end"] - gap["start"] + truth["step"] <= 4 * 3600
    ts, links = recs.ints["ts"], recs.strings("link")
    inside = (ts >= gap["start"]) & (ts <= gap["end"])
    assert not np.any(inside & (links == gap["link"]))
    assert np.any(inside & (links != gap["link"]))
    assert np.any((ts == gap["start"] - truth["step"]) & (links == gap["link"]))
    assert np.any((ts == gap["end"] + truth["step"]) & (links == gap["link"]))
    assert all(lab["kind"] != "gap" for lab in labels)
    # the traffic itself went on: the clean and expected series have no hole
    sel = window(truth, gap["start"], gap["end"])
    assert np.all(truth["clean"][gap["link"]][sel] > 0)
    for lab in labels:   # no label in or near the gap
        if lab["link"] == gap["link"]:
            assert lab["start"] - gap["end"] >= 6 * 3600 or gap["start"] - lab["end"] >= 6 * 3600


# ------------------------------------------------------------------ the benign calendar

def test_dst_changes_of_the_default_run(world):
    _recs, _labels, truth = world
    changes = dict((c["link"], c) for c in truth["dst_changes"])
    assert changes["nyc:wan"]["ts"] == 1772953200                 # 2026-03-08 07:00 UTC
    assert changes["fra:wan"]["ts"] == 1774746000                 # 2026-03-29 01:00 UTC
    assert changes["syd:wan"]["offset_before"] == 11 * 3600 and changes["syd:wan"]["offset_after"] == 10 * 3600
    assert "tyo:wan" not in changes and "sao:wan" not in changes


def test_batch_job_at_0200_local_moves_in_utc_with_dst(world):
    _recs, _labels, truth = world
    ts, step = truth["ts"], truth["step"]
    checked = 0
    for change in truth["dst_changes"]:
        clean = truth["clean"][change["link"]]
        onsets = []
        for days in (-1, 1):   # the night before and the night after the change
            centre = change["ts"] + days * 86400
            sel = np.flatnonzero((ts > centre - 4 * 3600) & (ts <= centre + 4 * 3600))
            assert len(sel) == 8 * 3600 // step
            jump = np.argmax(np.diff(clean[sel]))       # the batch job is the steepest rise of the night
            first = ts[sel[jump + 1]] - step            # beginning of its first step
            onsets.append(first)
            local = (first + (change["offset_before"] if days < 0 else change["offset_after"])) % 86400
            assert local == 2 * 3600
        if len(onsets) == 2:
            moved = (onsets[1] - onsets[0]) - 86400 * 2
            assert moved == change["offset_before"] - change["offset_after"]
            assert abs(moved) == 3600
            checked += 1
    assert checked == 3      # nyc, fra and syd


def test_holidays_are_local_weekdays_shaped_like_sundays(world):
    _recs, labels, truth = world
    ts = truth["ts"]
    assert all(lab["kind"] != "holiday" for lab in labels)
    compared = 0
    for hol in truth["holidays"]:
        site = truth["sites"][hol["link"]]
        assert hol["date"] in site["holidays"]
        date = datetime.date.fromisoformat(hol["date"])
        assert date.weekday() < 5
        # the holiday's steps are that local date
        off = datetime.datetime.fromtimestamp(hol["start"] - 1, tz=wg.ZoneInfo(site["tz"]))
        assert off.date() == date
        assert 23 * 3600 <= hol["end"] - hol["start"] + truth["step"] <= 25 * 3600
        back = (date.weekday() + 1) * 86400                    # the Sunday before
        if hol["start"] - back < ts[0] or any(c["link"] == hol["link"] and hol["start"] - back < c["ts"] <= hol["end"]
                                               for c in truth["dst_changes"]):
            continue
        clean = truth["clean"][hol["link"]]
        day = clean[window(truth, hol["start"], hol["end"])].sum()
        sunday = clean[window(truth, hol["start"] - back, hol["end"] - back)].sum()
        assert day / sunday == pytest.approx(1.0, abs=0.08)
        if site["type"] == "office":                            # far below a working day a week on or before
            other = [hol["start"] + d * 86400 for d in (7, -7)
                     if ts[0] <= hol["start"] + d * 86400 and hol["end"] + d * 86400 <= ts[-1]
                     and (date + datetime.timedelta(days=d)).isoformat() not in site["holidays"]]
            for start in other[:1]:
                work = clean[window(truth, start, start + hol["end"] - hol["start"])].sum()
                assert day < 0.6 * work
        compared += 1
    assert compared >= 5
    per_link = {}
    for hol in truth["holidays"]:
        per_link[hol["link"]] = per_link.get(hol["link"], 0) + 1
    assert sorted(per_link) == sorted(truth["links"]) and all(2 <= c <= 4 for c in per_link.values())


def test_first_business_day_is_busier_at_office_sites(world):
    _recs, labels, truth = world
    checked = 0
    holidays = set((h["link"], h["date"]) for h in truth["holidays"])
    for fbd in truth["first_business_days"]:
        assert truth["sites"][fbd["link"]]["type"] == "office"
        assert 0.2 <= fbd["boost"] <= 0.4
        date = datetime.date.fromisoformat(fbd["date"])
        assert date.weekday() < 5 and (fbd["link"], fbd["date"]) not in holidays
        assert all(datetime.date(date.year, date.month, d).weekday() >= 5 or
                   (fbd["link"], datetime.date(date.year, date.month, d).isoformat()) in holidays
                   for d in range(1, date.day))
        clean = truth["clean"][fbd["link"]]
        peak = clean[window(truth, fbd["start"], fbd["end"])].max()
        for shift in (1, -1, 2, -2, 3, -3, 4, -4):   # an ordinary working day nearby has the same curve
            other = date + datetime.timedelta(days=shift)
            start, end = fbd["start"] + shift * 86400, fbd["end"] + shift * 86400
            if other.weekday() < 5 and (fbd["link"], other.isoformat()) not in holidays \
                    and start >= truth["ts"][0] and end <= truth["ts"][-1]:
                usual = clean[window(truth, start, end)].max()
                growth = (1 + truth["sites"][fbd["link"]]["growth_per_week"]) ** (shift / 7.0)
                assert peak / usual == pytest.approx((1 + fbd["boost"]) / growth, rel=0.005)
                checked += 1
                break
    assert checked >= 1
    assert not any(lab["kind"] == "first_business_day" for lab in labels)


# ------------------------------------------------------------------ labels

def test_every_kind_present_with_defaults(world):
    _recs, labels, truth = world
    kinds = {}
    for lab in labels:
        kinds.setdefault(lab["kind"], []).append(lab)
    assert sorted(kinds) == sorted(wg.KINDS)
    assert all(len(v) >= 3 for v in kinds.values())
    assert [lab["id"] for lab in labels] == list(range(len(labels)))
    for lab in labels:
        assert set(["id", "kind", "link", "start", "end", "steps", "magnitude", "prefix", "dims"]) <= set(lab)
        assert lab["steps"] == (lab["end"] - lab["start"]) // truth["step"] + 1
    spikes = [lab["magnitude"] for lab in kinds["spike"]]
    assert all(0.5 <= m <= 9.0 for m in spikes) and any(m < 1.0 for m in spikes)
    assert all(1 <= lab["steps"] <= 6 for lab in kinds["spike"])
    assert all(-0.95 <= lab["magnitude"] <= -0.5 and lab["steps"] <= 12 for lab in kinds["dip"])
    assert all(-0.98 <= lab["magnitude"] <= -0.7 and 12 <= lab["steps"] <= 72 for lab in kinds["outage"])
    shifts = kinds["level_shift"]
    assert all(0.35 <= abs(lab["magnitude"]) <= 0.8 for lab in shifts)
    assert any(lab["magnitude"] > 0 for lab in shifts) and any(lab["magnitude"] < 0 for lab in shifts)
    assert any(not lab["reverts"] and lab["end"] == truth["ts"][-1] for lab in shifts)
    noisiest = max(truth["sites"], key=lambda k: truth["sites"][k]["noise_sigma"])
    assert any(lab["link"] == noisiest for lab in shifts)
    for lab in shifts:
        assert ("link" in lab["dims"]) == (lab["magnitude"] < 0)
    rates = [lab["magnitude"] / (lab["ramp_steps"] * truth["step"] / 86400.0) for lab in kinds["drift"]]
    assert any(r < 0.28 for r in rates)
    assert all(0.6 <= lab["magnitude"] <= 2.0 for lab in kinds["drift"])
    for lab in kinds["new_prefix"]:
        assert 0.05 <= lab["share"] <= 0.40
        assert lab["magnitude"] == pytest.approx(lab["share"] / (1 - lab["share"]), abs=1e-3)
        assert lab["dims"] == {"prefix": lab["prefix"]}


def test_labels_after_warmup_apart_and_off_holidays(world):
    _recs, labels, truth = world
    first = truth["start"] + 7 * 86400 + truth["step"]
    for lab in labels:
        assert lab["start"] >= first
        for hol in truth["holidays"]:
            if hol["link"] == lab["link"]:
                assert lab["end"] < hol["start"] or lab["start"] > hol["end"], (lab, hol)
    for link in truth["links"]:
        mine = sorted((lab for lab in labels if lab["link"] == link), key=lambda x: x["start"])
        for a, b in zip(mine, mine[1:]):
            assert b["start"] - a["end"] >= 6 * 3600


def test_effect_series_matches_labels(world):
    _recs, labels, truth = world
    covered = dict((link, np.zeros(len(truth["ts"]), dtype=bool)) for link in truth["links"])
    for lab in labels:
        sel = window(truth, lab["start"], lab["end"])
        covered[lab["link"]] |= sel
        effect = truth["effect"][lab["link"]][sel]
        if lab["kind"] == "drift":
            assert effect.max() == pytest.approx(1 + lab["magnitude"])
            assert effect[0] < 1 + 0.01 * lab["magnitude"] + 1e-9 and effect[-1] < effect.max()
        else:
            assert np.allclose(effect, 1 + lab["magnitude"], atol=1e-4)
    for link in truth["links"]:
        assert np.all(truth["effect"][link][~covered[link]] == 1.0)


def test_outage_drops_the_link_total_by_its_magnitude(world):
    _recs, labels, truth = world
    outages = [lab for lab in labels if lab["kind"] in ("outage", "dip")]
    assert outages
    for lab in outages:
        link = lab["link"]
        sel = window(truth, lab["start"], lab["end"])
        total = truth["total"][link][sel]
        clean = truth["clean"][link][sel]
        # exactly, once noise and bursts are taken out
        ratio = total / (clean * truth["noise"][link][sel] * (1 + truth["burst"][link][sel]))
        assert np.allclose(ratio, 1 + lab["magnitude"], rtol=1e-6)
        if lab["kind"] == "outage":
            # and plainly against the clean series: records still come, but tiny
            seen = np.median(total / clean)
            assert (1 + lab["magnitude"]) / 2.5 < seen < (1 + lab["magnitude"]) * 2.5
            assert seen < 0.5 and total.min() > 0


def test_carried_anomalies_sit_in_their_dimension(world):
    recs, labels, truth = world
    ts, links = recs.ints["ts"], recs.strings("link")
    checked = 0
    for lab in labels:
        if lab["kind"] not in ("spike", "level_shift", "drift") or "link" in lab["dims"]:
            continue
        (dim, value), = lab["dims"].items()
        sel = window(truth, lab["start"], lab["end"])
        if lab["kind"] == "drift":   # the top of the ramp
            sel &= truth["effect"][lab["link"]] == truth["effect"][lab["link"]].max()
        rows = np.isin(ts, truth["ts"][sel]) & (links == lab["link"])
        carried = recs.ints["bytes"][rows & (recs.strings(dim) == value)].sum()
        total = truth["total"][lab["link"]][sel]
        extra = (total * lab["magnitude"] / ((1 + lab["magnitude"]) * (1 + truth["burst"][lab["link"]][sel]))).sum()
        assert carried >= 0.999 * extra
        checked += 1
    assert checked >= 6


def test_new_prefix_is_never_seen_elsewhere_and_carries_its_share(world):
    recs, labels, truth = world
    ts, links, prefixes = recs.ints["ts"], recs.strings("link"), recs.strings("prefix")
    news = [lab for lab in labels if lab["kind"] == "new_prefix"]
    assert len(set(lab["prefix"] for lab in news)) == len(news)
    for lab in news:
        rows = prefixes == lab["prefix"]
        assert np.all(links[rows] == lab["link"])
        assert ts[rows].min() == lab["start"] and ts[rows].max() == lab["end"]
        sel = window(truth, lab["start"], lab["end"])
        step_i = (ts[rows] - truth["ts"][0]) // truth["step"]
        mine = np.bincount(step_i, weights=recs.ints["bytes"][rows], minlength=len(sel))[sel]
        share = mine * (1 + truth["burst"][lab["link"]][sel]) / truth["total"][lab["link"]][sel]
        assert np.allclose(share, lab["share"], atol=2e-3)


def test_benign_bursts_are_not_labels(world):
    _recs, labels, truth = world
    assert len(truth["bursts"]) >= 5 * 42 * 0.6
    assert all(0.1 <= b["magnitude"] <= 0.4 for b in truth["bursts"])
    label_keys = set((lab["link"], lab["start"]) for lab in labels)
    # bursts are placed independently of labels; almost none coincide with a label's start
    assert sum((b["link"], b["start"]) in label_keys for b in truth["bursts"]) <= 2


# ------------------------------------------------------------------ arguments and the command line

@pytest.mark.parametrize("kwargs, field", [
    (dict(seed=-1), "seed"),
    (dict(seed="x"), "seed"),
    (dict(sites=0), "sites"),
    (dict(sites=13), "sites"),
    (dict(sites=True), "sites"),
    (dict(days=5), "days"),
    (dict(days="42"), "days"),
    (dict(step=7), "step"),
    (dict(step=420), "step"),
    (dict(step=7200), "step"),
    (dict(start="yesterday"), "start"),
    (dict(start=1.5), "start"),
    (dict(start=1772000001), "start"),
    (dict(rows_per_step=2), "rows_per_step"),
    (dict(rows_per_step=4096), "rows_per_step"),
    (dict(sites=12, days=700, step=60, rows_per_step=512), "rows_per_step"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(NetstackError) as err:
        wg.generate(**kwargs)
    assert err.value.field == field
    assert field in str(err.value)


def test_command_line_writes_csv_and_labels(tmp_path):
    out = tmp_path / "world.csv"
    args = ["--seed", "4", "--sites", "2", "--days", "10", "--step", "1800", "--rows-per-step", "6", "--out", str(out)]
    assert wg.main(args) == 0
    recs, labels, truth = wg.generate(seed=4, sites=2, days=10, step=1800, rows_per_step=6)
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(HEADER)
    assert len(lines) == len(recs) + 1
    first = lines[1].split(",")
    assert int(first[0]) == recs.ints["ts"][0] and first[1] == recs.strings("link")[0]
    assert int(first[7]) == recs.ints["bytes"][0]
    with open(str(out) + ".labels.json") as f:
        doc = json.load(f)
    assert doc["labels"] == json.loads(json.dumps(labels))
    assert "clean" not in doc["truth"] and "ts" not in doc["truth"]
    assert doc["truth"]["ts_first"] == truth["ts"][0] and doc["truth"]["gaps"] == truth["gaps"]
    assert wg.main(["--days", "3", "--out", str(tmp_path / "bad.csv")]) == 2
