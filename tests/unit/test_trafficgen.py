"""Unit tests of the evaluation data generator (trafficgen): determinism, scale, the shape of
the traffic (seasonality, heavy-tailed prefixes), that every label sits where its anomaly was
injected, and the arithmetic of the scoring and forecast-error functions on hand-made cases.

The generator runs on small configurations (2 sites, 10-14 days, 15-minute steps) so the file
takes a few seconds; the 1 M / 10 M row sizes are exercised by the benchmark.
"""
import numpy as np
import pytest

from ansible_collections.netstack.tuning.tools import trafficgen as tg
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

SMALL = dict(sites=2, days=14, step=900)


def series(recs, truth):
    return tg.link_series(recs, truth["ts"][0], truth["step"], len(truth["ts"]))


def step_index(truth, ts):
    return int((ts - truth["ts"][0]) // truth["step"])


@pytest.fixture(scope="module")
def small():
    return tg.generate(seed=11, **SMALL)


@pytest.fixture(scope="module")
def clean_run():
    return tg.generate(seed=5, anomalies=[], holidays=[], bursts=0, **SMALL)


# ------------------------------------------------------------------ determinism and size

def test_same_seed_same_data_other_seed_other_data(small):
    r1, l1, t1 = small
    r2, l2, t2 = tg.generate(seed=11, **SMALL)
    assert l1 == l2
    for k in r1.ints:
        assert np.array_equal(r1.ints[k], r2.ints[k])
    for k in r1.codes:
        assert np.array_equal(r1.codes[k], r2.codes[k]) and r1.cats[k] == r2.cats[k]
    assert np.array_equal(t1["clean"]["dc1:uplink"], t2["clean"]["dc1:uplink"])
    r3, l3, _t3 = tg.generate(seed=12, **SMALL)
    assert l3 != l1
    assert len(r3) != len(r1) or not np.array_equal(r3.ints["bytes"], r1.ints["bytes"])


@pytest.mark.parametrize("n", [120000, 500000])
def test_records_scales_row_count(n):
    recs, _labels, truth = tg.generate(seed=1, records=n, **SMALL)
    assert abs(len(recs) - n) <= 0.1 * n
    assert truth["params"]["rows_per_step"] == round(n / (2 * 14 * 96.0))


def test_rows_per_step_is_exact_without_anomalies(clean_run):
    recs, labels, truth = clean_run
    assert labels == []
    assert len(recs) == len(truth["ts"]) * 2 * tg.DEFAULT_ROWS_PER_STEP
    # records come sorted by ts, then link
    key = recs.ints["ts"] * 2 + recs.codes["link"]
    assert np.all(np.diff(key) >= 0)


def test_too_few_records_and_bad_arguments_are_errors():
    with pytest.raises(NetstackError) as e:
        tg.generate(records=1000, **SMALL)
    assert e.value.field == "records"
    with pytest.raises(NetstackError):
        tg.generate(step=7, days=2)
    with pytest.raises(NetstackError):
        tg.generate(anomalies={"bogus": 1}, **SMALL)
    with pytest.raises(NetstackError):
        tg.generate(rows_per_step=64, records=10 ** 6)


def test_row_values_are_valid(small):
    recs, _labels, _truth = small
    assert recs.cats["direction"] == ["in", "out"]
    assert set(recs.cats["port_class"]) >= {"web", "db", "cache", "dns", "ssh"}
    assert recs.ints["bytes"].min() >= 1 and recs.ints["packets"].min() >= 1
    bpp = recs.ints["bytes"] / recs.ints["packets"]
    assert 40 <= np.median(bpp) <= 1500
    ef = recs.ints["dscp"] == 46
    assert 0 < ef.mean() < 0.5
    assert set(recs.ints["proto"][ef].tolist()) == {17}
    assert set(recs.ints["proto"].tolist()) == {6, 17}


# ------------------------------------------------------------------ shape of the traffic

def _local_hours_and_dow(truth, link):
    tz = truth["params"]["links"][link]["tz_offset_h"]
    local = truth["ts"] - truth["step"] / 2.0 + tz * 3600
    return (local % 86400) / 3600.0, (np.floor(local / 86400).astype(int) + 3) % 7


def test_diurnal_and_weekly_seasonality(clean_run):
    recs, _labels, truth = clean_run
    s = series(recs, truth)
    for link in truth["links"]:
        hour, dow = _local_hours_and_dow(truth, link)
        weekday = dow < 5
        business = s[link][weekday & (hour >= 10) & (hour < 17)].mean()
        night = s[link][weekday & (hour >= 1) & (hour < 5)].mean()
        assert business > 2.0 * night
        days = s[link][: (len(s[link]) // 96) * 96].reshape(-1, 96).sum(axis=1)
        # whole UTC days are close enough to local ones for this comparison when away from the edges
        daily_dow = (np.arange(len(days)) + 0) % 7    # the run starts on a Monday
        assert days[daily_dow >= 5].mean() < 0.8 * days[daily_dow < 5].mean()


def test_growth_and_site_sizes(clean_run):
    _recs, _labels, truth = clean_run
    rates = [p["base_bps"] for p in truth["params"]["links"].values()]
    assert all(200e6 <= r <= 5e9 for r in rates)
    for link in truth["links"]:
        c = truth["clean"][link]
        g = truth["params"]["links"][link]["growth_per_year"]
        assert 0.1 <= g <= 0.4
        ratio = c[-96 * 7:].sum() / c[:96 * 7].sum()        # same weekdays, one week later
        assert ratio == pytest.approx((1 + g) ** (7 / 365.25), rel=1e-6)


def test_holidays_drop_to_weekend_level_and_are_not_labels():
    recs, labels, truth = tg.generate(seed=2, holidays=[9], anomalies=[], bursts=0, **SMALL)
    s = series(recs, truth)
    assert {h["date"] for h in truth["holidays"]} == {"2026-09-16"}
    assert labels == []
    for h in truth["holidays"]:
        i0, i1 = step_index(truth, h["start"]), step_index(truth, h["end"])
        assert i1 - i0 + 1 == 96
        hol = s[h["link"]][i0:i1 + 1].sum()
        week_before = s[h["link"]][i0 - 7 * 96:i1 + 1 - 7 * 96].sum()
        assert hol < 0.85 * week_before
        # the holiday (a Wednesday) has exactly the shape of the Saturday after it, up to growth
        c = truth["clean"][h["link"]]
        g = truth["params"]["links"][h["link"]]["growth_per_year"]
        ratio = c[i0 + 3 * 96:i1 + 1 + 3 * 96] / c[i0:i1 + 1]
        assert np.allclose(ratio, (1 + g) ** (3 / 365.25), rtol=1e-9)
        # while the Tuesday before it does not
        assert not np.allclose(c[i0 - 96:i0] / c[i0 + 3 * 96:i1 + 1 + 3 * 96], (1 + g) ** (-4 / 365.25), rtol=1e-3)


def test_prefixes_are_heavy_tailed_and_web_dominates(clean_run):
    recs, _labels, truth = clean_run
    link0 = recs.codes["link"] == recs.cats["link"].index("dc1:uplink")
    sub = recs.take(link0 & (recs.strings("prefix") != tg.AGGREGATE_PREFIX))
    per_prefix = np.bincount(sub.codes["prefix"], weights=sub.ints["bytes"].astype(float))
    per_prefix = np.sort(per_prefix[per_prefix > 0])[::-1]
    assert per_prefix[0] > 10 * np.median(per_prefix)
    assert per_prefix[0] < 0.6 * per_prefix.sum()
    by_class = np.bincount(recs.codes["port_class"], weights=recs.ints["bytes"].astype(float))
    assert recs.cats["port_class"][int(np.argmax(by_class))] == "web"
    assert truth["prefixes"]["dc1:uplink"][0] in recs.cats["prefix"]


# ------------------------------------------------------------------ anomalies and labels

def test_default_mix_is_placed_by_the_rules(small):
    recs, labels, truth = small
    kinds = {lb["kind"] for lb in labels}
    assert kinds == set(tg.KINDS)
    warm_end = truth["start"] + 7 * 86400
    step = truth["step"]
    for lb in labels:
        assert lb["start"] > warm_end
        assert lb["start"] <= lb["end"] and (lb["start"] - truth["ts"][0]) % step == 0
        assert lb["steps"] == (lb["end"] - lb["start"]) // step + 1
        assert lb["dims"]
        for h in truth["holidays"]:
            if h["link"] == lb["link"]:
                assert lb["end"] < h["start"] or lb["start"] > h["end"]
    by_link = {}
    for lb in labels:
        by_link.setdefault(lb["link"], []).append((lb["start"], lb["end"]))
    for spans in by_link.values():
        spans.sort()
        for (s0, e0), (s1, _e1) in zip(spans, spans[1:]):
            assert s1 > e0 + 6 * 3600 - step
    for lb in labels:
        if lb["kind"] == "spike":
            assert 1 <= lb["steps"] <= 6 and 3 <= lb["magnitude"] <= 10
        elif lb["kind"] == "level_shift":
            assert lb["steps"] >= 86400 // step and 0.4 <= abs(lb["magnitude"]) <= 0.8
        elif lb["kind"] == "drift":
            assert 86400 // step <= lb["steps"] and 0.5 <= lb["magnitude"] <= 1.5
        else:
            assert 4 * 3600 // step <= lb["steps"] and 0.2 <= lb["magnitude"] <= 0.4


def _explicit(**kw):
    ts0 = tg.DEFAULT_START
    specs = [
        {"kind": "spike", "link": "dc1:uplink", "start": ts0 + 8 * 86400 + 12 * 3600, "steps": 3, "magnitude": 6.0,
         "carrier": "prefix"},
        {"kind": "spike", "link": "dc2:uplink", "start": ts0 + 8 * 86400 + 3 * 3600, "steps": 2, "magnitude": 4.0,
         "carrier": "port_class", "value": "dns"},
        {"kind": "new_prefix", "link": "dc1:uplink", "start": ts0 + 10 * 86400, "steps": 24, "magnitude": 0.3},
        {"kind": "level_shift", "link": "dc2:uplink", "start": ts0 + 11 * 86400, "steps": 96, "magnitude": -0.5},
        {"kind": "drift", "link": "dc1:uplink", "start": ts0 + 11 * 86400, "steps": 150, "magnitude": 1.0},
    ]
    return tg.generate(seed=4, anomalies=specs, holidays=[], bursts=0, **dict(SMALL, **kw))


@pytest.fixture(scope="module")
def explicit_run():
    return _explicit()


def test_spikes_raise_the_link_by_their_magnitude_in_their_carrier(explicit_run):
    recs, labels, truth = explicit_run
    s = series(recs, truth)
    spikes = [lb for lb in labels if lb["kind"] == "spike"]
    assert len(spikes) == 2
    for lb in spikes:
        i0, i1 = step_index(truth, lb["start"]), step_index(truth, lb["end"])
        ratio = s[lb["link"]][i0:i1 + 1] / truth["clean"][lb["link"]][i0:i1 + 1]
        assert np.all(np.abs(ratio / lb["magnitude"] - 1) < 0.3), ratio
        # the step before and after are normal
        for j in (i0 - 1, i1 + 1):
            assert 0.6 < s[lb["link"]][j] / truth["clean"][lb["link"]][j] < 1.5
        # the carrier holds the extra bytes
        dim, value = next(iter(lb["dims"].items()))
        at = (recs.ints["ts"] >= lb["start"]) & (recs.ints["ts"] <= lb["end"]) & (recs.strings("link") == lb["link"])
        carried = recs.ints["bytes"][at & (recs.strings(dim) == value)].sum()
        assert carried > (lb["magnitude"] - 1) / lb["magnitude"] * 0.8 * recs.ints["bytes"][at].sum()
    by_link = dict((lb["link"], lb) for lb in spikes)
    assert by_link["dc2:uplink"]["dims"] == {"port_class": "dns"} and by_link["dc2:uplink"]["prefix"] is None
    assert by_link["dc1:uplink"]["prefix"] == by_link["dc1:uplink"]["dims"]["prefix"]
    assert by_link["dc1:uplink"]["prefix"] in truth["prefixes"]["dc1:uplink"]


def test_new_prefix_is_absent_before_and_after_and_heavy_during(explicit_run):
    recs, labels, truth = explicit_run
    (lb,) = [x for x in labels if x["kind"] == "new_prefix"]
    p = lb["prefix"]
    assert p not in truth["prefixes"]["dc1:uplink"] and p not in truth["prefixes"]["dc2:uplink"]
    rows = recs.strings("prefix") == p
    ts = recs.ints["ts"][rows]
    assert ts.min() == lb["start"] and ts.max() == lb["end"]
    assert len(np.unique(ts)) == lb["steps"] == 24
    assert set(recs.strings("link")[rows].tolist()) == {"dc1:uplink"}
    at = (recs.ints["ts"] >= lb["start"]) & (recs.ints["ts"] <= lb["end"]) & (recs.strings("link") == "dc1:uplink")
    share = recs.ints["bytes"][at & rows].sum() / float(recs.ints["bytes"][at].sum())
    assert share == pytest.approx(0.3, abs=0.06)


def test_level_shift_and_drift_follow_truth(explicit_run):
    recs, labels, truth = explicit_run
    s = series(recs, truth)
    (ls,) = [x for x in labels if x["kind"] == "level_shift"]
    i0, i1 = step_index(truth, ls["start"]), step_index(truth, ls["end"])
    assert ls["dims"] == {"link": "dc2:uplink"} and ls["reverts"] is True
    r = s["dc2:uplink"][i0:i1 + 1].sum() / truth["clean"]["dc2:uplink"][i0:i1 + 1].sum()
    assert r == pytest.approx(0.5, abs=0.05)
    after = s["dc2:uplink"][i1 + 1:i1 + 97].sum() / truth["clean"]["dc2:uplink"][i1 + 1:i1 + 97].sum()
    assert after == pytest.approx(1.0, abs=0.08)
    (dr,) = [x for x in labels if x["kind"] == "drift"]
    i0, i1 = step_index(truth, dr["start"]), step_index(truth, dr["end"])
    ratio = s["dc1:uplink"][i0:i1 + 1] / truth["clean"]["dc1:uplink"][i0:i1 + 1]
    assert ratio[-10:].mean() - ratio[:10].mean() > 0.6
    assert s["dc1:uplink"][i0:i1 + 1].sum() / truth["expected"]["dc1:uplink"][i0:i1 + 1].sum() == pytest.approx(1.0, abs=0.08)
    exp = truth["expected"]["dc1:uplink"][i0:i1 + 1] / truth["clean"]["dc1:uplink"][i0:i1 + 1]
    assert np.all(np.diff(exp) >= -1e-12) and exp[-1] == pytest.approx(2.0)


def test_explicit_anomalies_that_overlap_are_refused():
    ts0 = tg.DEFAULT_START
    with pytest.raises(NetstackError):
        tg.generate(anomalies=[{"kind": "spike", "link": 0, "start": ts0 + 8 * 86400, "steps": 3},
                               {"kind": "spike", "link": 0, "start": ts0 + 8 * 86400 + 3600, "steps": 3}], **SMALL)
    with pytest.raises(NetstackError):   # inside the warm-up
        tg.generate(anomalies=[{"kind": "spike", "link": 0, "start": ts0 + 86400}], **SMALL)


def test_split_cuts_records_and_labels(explicit_run):
    recs, labels, truth = explicit_run
    (ls,) = [x for x in labels if x["kind"] == "level_shift"]
    cut = ls["start"] + 3600
    hist, fut, hl, fl = tg.split(recs, labels, cut)
    assert len(hist) + len(fut) == len(recs)
    assert hist.ints["ts"].max() < cut <= fut.ints["ts"].min()
    assert ls in hl and ls in fl
    assert all(x["start"] < cut for x in hl) and all(x["end"] >= cut for x in fl)
    assert len([x for x in labels if x["end"] < cut]) == len(hl) - len([x for x in hl if x["end"] >= cut])


# ------------------------------------------------------------------ scoring

def lab(kind, link, start, end):
    return {"kind": kind, "link": link, "start": start, "end": end}


LABELS = [lab("spike", "a", 1000, 1000), lab("spike", "a", 5000, 5300), lab("level_shift", "b", 10000, 20000),
          lab("new_prefix", "b", 30000, 31000)]


def test_score_perfect_and_none():
    perfect = tg.score(LABELS, [dict(x) for x in LABELS])
    assert perfect["overall"]["precision"] == 1.0 and perfect["overall"]["recall"] == 1.0 and perfect["overall"]["f1"] == 1.0
    assert perfect["per_kind"]["spike"]["tp"] == 2 and perfect["per_kind"]["spike"]["labels"] == 2
    assert perfect["kind_accuracy"] == 1.0
    assert perfect["per_kind"]["drift"] == {"precision": None, "recall": None, "f1": None, "labels": 0, "detections": 0, "tp": 0,
                                            "tp_detections": 0}
    none = tg.score(LABELS, [])
    assert none["overall"]["recall"] == 0.0
    assert none["overall"]["precision"] is None and none["overall"]["f1"] is None
    assert none["kind_accuracy"] is None
    assert tg.score([], [])["overall"]["recall"] is None


def test_score_half_and_false_positives():
    dets = [lab("spike", "a", 1000, 1000), lab("level_shift", "b", 15000, 15000),
            lab("spike", "a", 50000, 50100), lab("spike", "b", 1000, 1000)]        # last two: nothing there
    r = tg.score(LABELS, dets)
    o = r["overall"]
    assert (o["tp"], o["labels"], o["tp_detections"], o["detections"], o["false_positives"]) == (2, 4, 2, 4, 2)
    assert o["recall"] == 0.5 and o["precision"] == 0.5 and o["f1"] == 0.5
    sp = r["per_kind"]["spike"]
    assert (sp["recall"], sp["precision"]) == (0.5, pytest.approx(1 / 3.0))
    assert sp["f1"] == pytest.approx(2 * 0.5 * (1 / 3.0) / (0.5 + 1 / 3.0))
    assert r["per_kind"]["new_prefix"]["recall"] == 0.0 and r["per_kind"]["new_prefix"]["precision"] is None
    assert r["per_kind"]["new_prefix"]["f1"] is None
    assert r["per_kind"]["level_shift"]["precision"] == 1.0


def test_score_wrong_kind_counts_for_detection_not_for_kind_accuracy():
    dets = [lab("drift", "b", 12000, 13000), lab("spike", "a", 1000, 1000)]
    r = tg.score(LABELS, dets)
    assert r["per_kind"]["level_shift"]["recall"] == 1.0          # detected, whatever the reported kind
    assert r["per_kind"]["drift"]["precision"] == 1.0 and r["per_kind"]["drift"]["detections"] == 1
    assert r["per_kind"]["drift"]["recall"] is None and r["per_kind"]["drift"]["f1"] is None
    assert r["kind_accuracy"] == 0.5
    # the best-overlapping detection decides the kind
    r = tg.score([lab("level_shift", "b", 10000, 20000)], [lab("spike", "b", 10000, 10300), lab("level_shift", "b", 9000, 21000)])
    assert r["kind_accuracy"] == 1.0
    r = tg.score([lab("level_shift", "b", 10000, 20000)], [lab("spike", "b", 9000, 21000), lab("level_shift", "b", 10000, 10300)])
    assert r["kind_accuracy"] == 0.0
    # other link: no match
    assert tg.score([lab("spike", "a", 1000, 1000)], [lab("spike", "b", 1000, 1000)])["overall"]["recall"] == 0.0


def test_score_tolerance_boundary():
    label = [lab("spike", "a", 10000, 10300)]
    assert tg.score(label, [lab("spike", "a", 10900, 11000)])["overall"]["tp"] == 1       # 600 s after the end
    assert tg.score(label, [lab("spike", "a", 10901, 11000)])["overall"]["tp"] == 0
    assert tg.score(label, [lab("spike", "a", 9000, 9400)])["overall"]["tp"] == 1         # 600 s before the start
    assert tg.score(label, [lab("spike", "a", 9000, 9399)])["overall"]["tp"] == 0
    assert tg.score(label, [lab("spike", "a", 10901, 11000)], tolerance=901)["overall"]["tp"] == 1
    assert tg.score(label, [lab("spike", "a", 10301, 10400)], tolerance=0)["overall"]["tp"] == 0


def test_score_counts_false_positives_on_holidays_and_validates():
    hols = [{"date": "x", "link": "a", "start": 100000, "end": 186000}]
    dets = [lab("level_shift", "a", 120000, 150000), lab("spike", "b", 120000, 120000), lab("spike", "a", 1000, 1000)]
    o = tg.score(LABELS, dets, holidays=hols)["overall"]
    assert (o["false_positives"], o["on_holiday"]) == (2, 1)
    with pytest.raises(NetstackError):
        tg.score(LABELS, [{"kind": "spike", "link": "a"}])
    with pytest.raises(NetstackError):
        tg.score(LABELS, [lab("spike", "a", 10, 5)])


# ------------------------------------------------------------------ forecasts and attribution

def test_seasonal_naive_repeats_the_last_season():
    assert tg.seasonal_naive([1, 2, 3, 4, 5], 2, 5).tolist() == [4, 5, 4, 5, 4]
    assert tg.seasonal_naive([1, 2, 3], 3, 2).tolist() == [1, 2]
    assert tg.seasonal_naive([1, 2, 3], 3, 0).tolist() == []
    with pytest.raises(NetstackError):
        tg.seasonal_naive([1, 2], 3, 4)


def test_forecast_error_known_numbers():
    actual = [10.0, 20.0, 30.0, 40.0]
    forecast = [12.0, 18.0, 30.0, 44.0]          # errors 2, 2, 0, 4
    naive = [20.0, 10.0, 40.0, 30.0]             # errors 10 each
    e = tg.forecast_error(actual, forecast, naive)
    assert e["n"] == 4
    assert e["mae"] == pytest.approx(2.0)
    assert e["naive_mae"] == pytest.approx(10.0)
    assert e["mase"] == pytest.approx(0.2)
    assert e["smape"] == pytest.approx(np.mean([4 / 22.0, 4 / 38.0, 0.0, 8 / 84.0]))
    worse = tg.forecast_error(actual, naive, forecast)
    assert worse["mase"] == pytest.approx(5.0)
    # 0/0 terms count 0, non-finite steps are skipped, a perfect naive gives no ratio
    e = tg.forecast_error([0.0, 1.0, np.nan], [0.0, 3.0, 1.0], [0.0, 1.0, 1.0])
    assert e["n"] == 2 and e["smape"] == pytest.approx(0.5) and e["mase"] is None
    with pytest.raises(NetstackError):
        tg.forecast_error([1, 2], [1], [1, 2])


def test_seasonal_naive_on_generated_data_beats_flat_mean(clean_run):
    recs, _labels, truth = clean_run
    s = series(recs, truth)["dc1:uplink"]
    hist, fut = s[:-96], s[-96:]
    naive = tg.seasonal_naive(hist, 96 * 7, 96)
    flat = np.full(96, hist.mean())
    e = tg.forecast_error(fut, flat, naive)
    assert e["mase"] > 2.0            # ignoring the seasonality is much worse than naive
    clean = truth["clean"]["dc1:uplink"][-96:]
    assert tg.forecast_error(fut, clean, naive)["mase"] < 1.0   # the truth beats naive


def test_attribution_hit():
    label = {"dims": {"port_class": "dns"}}
    top = [{"dimension": "prefix", "value": "192.0.2.0/24", "share": 0.5}, {"dimension": "port_class", "value": "dns"}]
    assert tg.attribution_hit(label, top) is True
    assert tg.attribution_hit(label, top, k=1) is False
    assert tg.attribution_hit({"dims": {"port": 443}}, [{"dimension": "port", "value": "443"}]) is True
    assert tg.attribution_hit({"dims": {"prefix": "p"}}, [{"dimension": "port_class", "value": "p"}]) is False
    assert tg.attribution_hit({"dims": {}}, top) is False
    assert tg.attribution_hit(label, []) is False


def test_explicit_magnitudes_are_checked_and_values_pick_the_carrier():
    ts0 = tg.DEFAULT_START + 9 * 86400
    for kind, m in (("spike", 0.5), ("level_shift", -1.0), ("drift", -0.2), ("new_prefix", 1.0)):
        with pytest.raises(NetstackError) as e:
            tg.generate(anomalies=[{"kind": kind, "link": 0, "start": ts0, "steps": 100, "magnitude": m}], **SMALL)
        assert e.value.field == "anomalies[0].magnitude"
    _r, labels, _t = tg.generate(anomalies=[{"kind": "spike", "link": 1, "start": ts0, "value": "ssh"}], **SMALL)
    assert [(lb["link"], lb["start"], lb["dims"]) for lb in labels] == [("dc2:uplink", ts0, {"port_class": "ssh"})]
