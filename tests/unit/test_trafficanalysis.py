"""The traffic analyzer on synthetic series whose answers are known by construction."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.netstack.tuning.plugins.module_utils.traffic import analysis as ta
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import data as td
from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError

STEP = 300
T0 = 1788739200          # 2026-09-07 00:00 UTC, a Monday
PER_DAY = 86400 // STEP


def seasonal_rate(n, seed=1, base=1e9, noise=0.06, growth=0.0):
    """Diurnal peak at 14:00 UTC, weekends at 60 %, log-normal noise, optional growth/year."""
    rng = np.random.default_rng(seed)
    t = T0 + np.arange(n) * STEP
    hour = (t % 86400) / 3600.0
    wd = ((t // 86400) + 3) % 7
    shape = (0.5 + 0.5 * np.exp(-((hour - 14) / 4) ** 2)) * np.where(wd >= 5, 0.6, 1.0)
    trend = np.exp(math.log1p(growth) * (t - T0) / (365 * 86400.0))
    return t, base * shape * trend * rng.lognormal(0, noise, n)


def records(t, rate, prefixes=10, carry=None, direction="in", link="dc1:up"):
    """Rate (bits/s per bin) spread evenly over ``prefixes`` remote /24s; ``carry`` adds
    {prefix_index: extra bits/s array} on top."""
    n = len(t)
    parts_t, parts_p, parts_b = [], [], []
    for k in range(prefixes):
        parts_t.append(t)
        parts_p.append(np.full(n, k))
        parts_b.append(rate * STEP / 8 / prefixes)
    for k, extra in (carry or {}).items():
        parts_t.append(t)
        parts_p.append(np.full(n, k))
        parts_b.append(extra * STEP / 8)
    ts = np.concatenate(parts_t)
    pre = np.concatenate(parts_p)
    b = np.concatenate(parts_b).astype(np.int64)
    keep = b > 0
    m = int(keep.sum())
    npre = int(pre.max()) + 1
    return td.Records(
        {"ts": ts[keep], "proto": np.full(m, 6), "dscp": np.zeros(m), "bytes": b[keep], "packets": b[keep] // 1000 + 1},
        {"link": np.zeros(m), "direction": np.zeros(m), "prefix": pre[keep], "port_class": np.zeros(m)},
        {"link": [link], "direction": [direction], "prefix": ["10.0.%d.0/24" % k for k in range(npre)],
         "port_class": ["web"]})


def kinds(result):
    return [(a["kind"], round((a["start"] - T0) / 86400.0, 2)) for a in result["anomalies"]]


def test_options_name_the_bad_field():
    for opts, field in (({"step": 7}, "step"), ({"warn": 0.9, "critical": 0.8}, "warn"),
                        ({"capacity": {"a": -1}}, "capacity.a"), ({"holidays": ["2026-13-01"]}, "holidays[0]"),
                        ({"bogus": 1}, "bogus"), ({"percentiles": [0]}, "percentiles[0]"),
                        ({"price_per_mbps": "cheap"}, "price_per_mbps")):
        with pytest.raises(NetstackError) as e:
            ta.options(opts)
        assert e.value.field == field, (opts, e.value.field)


def test_no_records_is_an_error():
    with pytest.raises(NetstackError) as e:
        ta.analyze(td.Records.empty())
    assert e.value.field == "records"


def test_binning_is_exact_and_marks_missing_bins():
    rows = [dict(ts=T0 + 10, link="a", direction="in", prefix="-", proto=0, port_class="none", dscp=0, bytes=100, packets=1),
            dict(ts=T0 + 299, link="a", direction="in", prefix="-", proto=0, port_class="none", dscp=0, bytes=50, packets=1),
            dict(ts=T0 + 900, link="a", direction="out", prefix="-", proto=0, port_class="none", dscp=0, bytes=7, packets=1),
            dict(ts=T0 + 1500, link="a", direction="in", prefix="-", proto=0, port_class="none", dscp=0, bytes=1, packets=1)]
    b = ta.Binned(td.Records.from_rows(rows), 300)
    assert b.nbins == 6 and b.links == ["a", "a"] and b.directions == ["in", "out"]
    assert b.bytes[0].tolist() == [150, 0, 0, 0, 0, 1]
    assert b.bytes[1].tolist() == [0, 0, 0, 7, 0, 0]
    assert b.valid[1].tolist() == [False, False, False, True, False, False]
    assert b.bps()[0][0] == pytest.approx(150 * 8 / 300.0)


def test_clean_seasonal_traffic_has_no_anomalies():
    t, rate = seasonal_rate(28 * PER_DAY, growth=0.3)
    r = ta.analyze(records(t, rate))
    assert r["anomalies"] == []
    s = r["series"][0]
    assert s["season"] == "weekly"
    hw = s["profile"]["hour_weekday"]
    assert len(hw) == 7 and len(hw[0]) == 24
    assert hw[2][14] > 1.8 * hw[2][3]     # Wednesday afternoon vs night
    assert hw[6][14] < 0.7 * hw[2][14]    # Sunday vs Wednesday


def test_spike_level_shift_drift_and_new_prefix_are_found_and_told_apart():
    n = 28 * PER_DAY
    t, rate = seasonal_rate(n)
    spike = np.zeros(n)
    spike[10 * PER_DAY + 100:10 * PER_DAY + 104] = 4 * rate[10 * PER_DAY + 100:10 * PER_DAY + 104]
    rate = rate.copy()
    rate[15 * PER_DAY + 50:19 * PER_DAY] *= 1.7                        # level shift for 3.8 days
    rate[21 * PER_DAY:23 * PER_DAY] *= np.linspace(1.0, 1.8, 2 * PER_DAY)  # 2-day ramp
    rate[23 * PER_DAY:] *= 1.8
    newp = np.zeros(n)
    newp[25 * PER_DAY + 120:25 * PER_DAY + 180] = 0.5 * rate[25 * PER_DAY + 120:25 * PER_DAY + 180]
    r = ta.analyze(records(t, rate, carry={3: spike, 10: newp}))
    found = kinds(r)
    assert ("spike", 10.35) in found, found
    assert any(k == "level_shift" and 15.1 <= d <= 15.3 for k, d in found), found
    assert any(k == "drift" and 20.5 <= d <= 22.5 for k, d in found), found
    assert any(k == "new_prefix" and 25.3 <= d <= 25.5 for k, d in found), found
    assert len(found) <= 6, found     # the shift's return may count; nothing else
    sp = next(a for a in r["anomalies"] if a["kind"] == "spike")
    # the spike was carried by one prefix: it is the top contributor
    assert sp["top_contributors"][0]["dimension"] == "prefix"
    assert sp["top_contributors"][0]["value"] == "10.0.3.0/24"
    assert sp["magnitude"] > 2
    npf = next(a for a in r["anomalies"] if a["kind"] == "new_prefix")
    assert npf["prefix"] == "10.0.10.0/24" and 0.2 < npf["share"] < 0.5


def test_outliers_do_not_break_the_profile():
    """Isolated huge outliers (10x, 1 % of bins) are flagged as spikes, and the seasonal
    profile stays within a few percent of the clean one."""
    n = 21 * PER_DAY
    t, rate = seasonal_rate(n, noise=0.03)
    clean = ta.analyze(records(t, rate))["series"][0]["profile"]["hour_weekday"]
    rng = np.random.default_rng(5)
    hit = rng.choice(np.arange(8 * PER_DAY, n), size=n // 100, replace=False)
    dirty = rate.copy()
    dirty[hit] *= 10
    r = ta.analyze(records(t, dirty))
    prof = r["series"][0]["profile"]["hour_weekday"]
    assert abs(prof[2][14] / clean[2][14] - 1) < 0.05
    spikes = [a for a in r["anomalies"] if a["kind"] == "spike"]
    assert len(spikes) >= 0.8 * len(hit)


def test_holidays_take_sundays_profile():
    n = 21 * PER_DAY
    t, rate = seasonal_rate(n)
    rate = rate.copy()
    day = 16                                   # a Wednesday, at weekend level
    rate[day * PER_DAY:(day + 1) * PER_DAY] *= 0.6
    without = ta.analyze(records(t, rate))
    assert any(a["kind"] in ("level_shift", "dip", "drift") for a in without["anomalies"])
    r = ta.analyze(records(t, rate), {"holidays": ["2026-09-23"]})
    assert r["anomalies"] == [], kinds(r)


def test_billing_is_the_95th_percentile_of_5_minute_rates():
    t = T0 + np.arange(200) * STEP
    rate_in = np.arange(1, 201) * 1e6          # 1..200 Mbit/s
    rec = td.Records.concat([records(t, rate_in, prefixes=1), records(t, rate_in / 2, prefixes=1, direction="out")])
    r = ta.analyze(rec, {"price_per_mbps": 2.0})
    (bill,) = r["billing"]
    assert bill["month"] == "2026-09"
    assert bill["p95_in_bps"] == pytest.approx(np.percentile(rate_in, 95), rel=1e-4)
    assert bill["p95_out_bps"] == pytest.approx(np.percentile(rate_in / 2, 95), rel=1e-4)
    assert bill["billable_bps"] == bill["p95_in_bps"]
    assert bill["cost"] == pytest.approx(bill["billable_bps"] / 1e6 * 2.0, abs=0.01)


def test_projection_recovers_growth_and_its_interval_covers_it():
    n = 42 * PER_DAY
    t, rate = seasonal_rate(n, growth=3.0, noise=0.05)   # +300 %/year: visible in 6 weeks
    r = ta.analyze(records(t, rate), {"capacity": {"dc1:up": 2.5e9}, "horizon_days": 365})
    p = r["projection"][0]
    assert p["days_used"] == 42
    lo, hi = p["growth_per_year_interval"]
    assert lo <= 3.0 <= hi, (lo, p["growth_per_year"], hi)
    assert 2.0 < p["growth_per_year"] < 4.5
    d30 = p["p95_in_30d"]
    assert d30["lo_bps"] < d30["point_bps"] < d30["hi_bps"]
    assert d30["point_bps"] > p["last_day_p95_bps"]
    w = r["water_levels"][0]
    assert w["level"] in ("ok", "warn")
    assert w["crossing"]["critical"]["likely"] is not None
    assert w["crossing"]["critical"]["earliest"] <= w["crossing"]["critical"]["likely"]


def test_short_data_still_analyses():
    t, rate = seasonal_rate(12)                # one hour
    r = ta.analyze(records(t, rate))
    assert r["series"][0]["season"] == "none"
    assert "note" in r["projection"][0]
    assert r["records"] == 12 * 10 and r["records_per_second"] > 0


def test_water_level_critical_now():
    t = T0 + np.arange(PER_DAY) * STEP
    r = ta.analyze(records(t, np.full(PER_DAY, 9.5e8), prefixes=1), {"capacity": {"dc1:up": 1e9}})
    w = r["water_levels"][0]
    assert w["level"] == "critical" and w["p95_utilisation"] == pytest.approx(0.95, rel=1e-3)
    assert w["time_above_critical"] == 1.0


def test_a_ramp_that_snaps_back_is_a_drift_not_a_level_shift():
    """A slow climb over 36 hours that ends with a sharp return is one drift starting where
    the climb began; a step that holds for two days and then returns stays a level shift."""
    n = 28 * PER_DAY
    t, rate = seasonal_rate(n, seed=3)
    rate = rate.copy()
    a, b = 12 * PER_DAY, 12 * PER_DAY + 36 * 12
    rate[a:b] *= np.exp(np.linspace(0.0, 0.8, b - a))        # +120 % at the top, then back at once
    s0, s1 = 22 * PER_DAY, 24 * PER_DAY                      # Tuesday and Wednesday
    rate[s0:s1] *= 1.8
    r = ta.analyze(records(t, rate))
    found = kinds(r)
    drifts = [d for k, d in found if k == "drift"]
    shifts = [d for k, d in found if k == "level_shift"]
    assert any(11.5 <= d <= 12.6 for d in drifts), found
    assert not any(12.0 <= d <= 13.6 for d in shifts), found    # the snap back is not a shift of its own
    assert any(21.9 <= d <= 22.1 for d in shifts) and any(23.9 <= d <= 24.1 for d in shifts), found
    assert len(found) == 3, found


def test_billing_months_are_utc_calendar_months_whatever_the_first_record():
    """Data starting at 13:00 UTC on Jan 31: Feb 1's early hours bill to February (they were
    counted in day blocks from the first record, so 13 hours of Feb 1 went to January)."""
    t0 = 1801400400                            # 2027-01-31 13:00 UTC
    t = t0 + np.arange(2 * PER_DAY) * STEP     # to 2027-02-02 13:00
    feb = t >= 1801440000                      # 2027-02-01 00:00 UTC
    rate = np.where(feb, 200e6, 100e6)
    r = ta.analyze(records(t, rate, prefixes=1), {})
    bills = dict((b["month"], b) for b in r["billing"])
    assert sorted(bills) == ["2027-01", "2027-02"]
    assert bills["2027-01"]["samples_in"] == int((~feb).sum()) == 11 * 12
    assert bills["2027-02"]["samples_in"] == int(feb.sum())
    assert bills["2027-01"]["p95_in_bps"] == pytest.approx(100e6, rel=1e-4)
    assert bills["2027-02"]["p95_in_bps"] == pytest.approx(200e6, rel=1e-4)


def test_records_years_apart_are_refused_naming_the_sources():
    """Two files, one of them with times a thousand years off (milliseconds read as seconds
    by another tool): a clear error, not a MemoryError allocating the bins."""
    t = T0 + np.arange(10) * STEP
    far = records(t, np.full(10, 1e6), prefixes=1)
    far.ints["ts"] = far.ints["ts"] * 20
    rec = td.Records.concat([records(t, np.full(10, 1e6), prefixes=1), far])
    with pytest.raises(NetstackError) as e:
        ta.analyze(rec, {})
    assert e.value.field == "sources" and "a time in the sources is wrong" in str(e.value)


def test_a_gap_in_the_data_is_reported_as_a_gap_not_an_outage():
    """Three hours with no record on any link (the collector stopped): reported under gaps,
    no anomaly, and billing leaves them out instead of counting zero traffic."""
    n = 21 * PER_DAY
    t, rate = seasonal_rate(n, seed=3)
    rec = td.Records.concat([records(t, rate), records(t, rate * 0.5, direction="out")])
    g0 = T0 + 15 * 86400 + 10 * 3600                     # day 15, 10:00-13:00 UTC
    keep = (rec.ints["ts"] < g0) | (rec.ints["ts"] >= g0 + 3 * 3600)
    gapped = td.Records(dict((k, v[keep]) for k, v in rec.ints.items()), dict((k, v[keep]) for k, v in rec.codes.items()),
                        rec.cats)
    r = ta.analyze(gapped, {})
    assert r["gaps"] == [{"start": g0, "end": g0 + 3 * 3600 - 1, "bins": 36}]
    assert not [a for a in r["anomalies"] if a["start"] <= g0 + 3 * 3600 and a["end"] >= g0], r["anomalies"]
    assert r["billing"][0]["samples_in"] == n - 36
    # a quiet link with no records in most bins has no gaps: its empty bins are no traffic
    sparse = records(t[::5], rate[::5], prefixes=1)
    assert ta.analyze(sparse, {})["gaps"] == []


def test_a_lasting_level_shift_is_not_projected_as_growth():
    """Flat for 20 days, then twice the traffic for 10: no growth, and the projection says
    why (it extrapolated the step as thousands of percent a year)."""
    n = 30 * PER_DAY
    t, rate = seasonal_rate(n, noise=0.05)
    rate = np.where(t >= T0 + 20 * 86400, rate * 2, rate)
    p = ta.analyze(records(t, rate), {"horizon_days": 90})["projection"][0]
    assert p["level_shift"]["day"] == "2026-09-27" and 1.8 < p["level_shift"]["ratio"] < 2.2, p.get("level_shift")
    assert "level shift" in p["note"]
    lo, hi = p["growth_per_year_interval"]
    assert abs(p["growth_per_year"]) < 1.0 and lo <= 0.5, (p["growth_per_year"], lo, hi)
    assert p["p95_in_30d"]["point_bps"] < 1.5 * p["last_day_p95_bps"]


def test_a_new_prefix_hides_only_the_volume_events_it_carries():
    """A spike whose change another prefix carries stays next to a long new-prefix window; a
    shift the new prefix carries is reported as the prefix."""
    new = {"kind": "new_prefix", "link": "L", "directions": ["in"], "start": 0, "end": 26 * 86400, "prefix": "10.9.0.0/24",
           "share": 0.002, "score": 1.0, "magnitude": 0.002, "top_contributors": []}

    def event(kind, start, value, share):
        return {"kind": kind, "link": "L", "directions": ["in"], "start": start, "end": start + 3600, "score": 9.0,
                "magnitude": 3.35, "top_contributors": [{"dimension": "prefix", "value": value, "share_of_change": share}]}
    spike = event("spike", 5 * 86400, "10.1.0.0/24", 0.9)
    shift = event("level_shift", 9 * 86400, "10.9.0.0/24", 0.8)
    kinds_found = sorted(a["kind"] for a in ta._combine([new, spike, shift], 6 * 3600))
    assert kinds_found == ["new_prefix", "spike"]


# ------------------------------------------------------------------ outages, calendars, gaps

def _overlapping(result, t0, t1, link=None):
    return [a for a in result["anomalies"] if a["start"] <= t1 and a["end"] >= t0 and (link is None or a["link"] == link)]


def test_outages_of_hours_are_one_outage_alert_each():
    """A 2-hour and a 5-hour drop to 15 % (longer than a dip, shorter than a shift window):
    before, they were missed or split into up to 9 alerts."""
    n = 21 * PER_DAY
    t, rate = seasonal_rate(n, seed=4)
    rate = rate.copy()
    windows = [(T0 + 10 * 86400 + 11 * 3600, 2), (T0 + 15 * 86400 + 9 * 3600, 5)]
    for start, hours in windows:
        rate[(t >= start) & (t < start + hours * 3600)] *= 0.15
    r = ta.analyze(records(t, rate))
    for start, hours in windows:
        near = _overlapping(r, start - 3600, start + (hours + 1) * 3600)
        assert [a["kind"] for a in near] == ["outage"], (hours, near)
        a = near[0]
        assert abs(a["start"] - start) <= 2 * STEP and abs(a["end"] + 1 - (start + hours * 3600)) <= 2 * STEP, a
        assert -0.92 < a["magnitude"] < -0.75, a["magnitude"]
    assert len(r["anomalies"]) == 2, kinds(r)


def test_a_drop_that_lasts_is_a_level_shift_not_an_outage():
    n = 21 * PER_DAY
    t, rate = seasonal_rate(n, seed=6)
    rate = np.where(t >= T0 + 12 * 86400 + 10 * 3600, rate * 0.3, rate)
    found = [k for k, _d in kinds(ta.analyze(records(t, rate)))]
    assert "level_shift" in found and "outage" not in found, found


def test_a_spike_inside_a_drift_is_reported_with_it():
    n = 28 * PER_DAY
    t, rate = seasonal_rate(n, seed=7, noise=0.04)
    rate = rate.copy()
    ramp = (t >= T0 + 12 * 86400) & (t < T0 + 15 * 86400)
    rate[ramp] *= np.linspace(1.0, 2.0, int(ramp.sum()))
    rate[t >= T0 + 15 * 86400] *= 1.0
    hit = T0 + 13 * 86400 + 15 * 3600
    rate[(t >= hit) & (t < hit + 2 * STEP)] *= 5
    r = ta.analyze(records(t, rate))
    found = [a["kind"] for a in _overlapping(r, T0 + 12 * 86400, T0 + 15 * 86400)]
    assert "drift" in found and "spike" in found, kinds(r)


def test_local_times_follow_daylight_saving():
    berlin = ta.zone("Europe/Berlin")
    switch = 1774746000                     # 2026-03-29 01:00 UTC: 02:00 CET becomes 03:00 CEST
    t = np.asarray([switch - 3600, switch - 1, switch, switch + 86400])
    assert (ta.local_times(t, berlin) - t).tolist() == [3600, 3600, 7200, 7200]
    assert ta.local_times(t, None).tolist() == t.tolist()
    assert ta.zone("UTC") is None


def _local_world(tz, start, days, job=True, holiday=None, seed=8):
    """Office-like traffic built in ``tz``'s local time: a peak at 14:00, weekends at 60 %, a
    nightly job at 02:00 local (+150 % for an hour); ``holiday`` (a local date) at weekend
    level."""
    rng = np.random.default_rng(seed)
    t = start + np.arange(days * PER_DAY) * STEP
    local = ta.local_times(t, ta.zone(tz))
    hour = (local % 86400) / 3600.0
    day = local // 86400
    wd = (day + 3) % 7
    weekend = (wd >= 5) | (day == (ta.holiday_day(holiday, "h") if holiday else -1))
    shape = (0.5 + 0.5 * np.exp(-((hour - 14) / 4) ** 2)) * np.where(weekend, 0.6, 1.0)
    if job:
        shape = shape * np.where((hour >= 2) & (hour < 3), 2.5, 1.0)
    return t, 1e9 * shape * rng.lognormal(0, 0.05, len(t))


def test_a_2am_local_job_is_no_anomaly_across_a_dst_change_in_local_time():
    """Six weeks over the EU change of 2026-03-29: in UTC the job sits at 01:00 for four weeks
    and at 00:00 for two, so the UTC profile holds neither and the job's hour is flagged night
    after night (30 spikes when this test was written); in the site's zone it is the same hour
    every day, and nothing is flagged."""
    start = 1772409600                      # 2026-03-02 00:00 UTC, a Monday
    t, rate = _local_world("Europe/Berlin", start, 42)
    rec = records(t, rate, link="fra:wan")
    utc = ta.analyze(rec)
    assert len(utc["anomalies"]) >= 10, kinds(utc)   # what the UTC-only profile does (the test could fail)
    local = ta.analyze(rec, {"timezones": {"fra:wan": "Europe/Berlin"}})
    assert local["anomalies"] == [], [(a["kind"], a["start"]) for a in local["anomalies"]]
    assert local["series"][0]["timezone"] == "Europe/Berlin"
    # the hour-of-week table is local: the job sits at 02:00 on Wednesday
    hw = local["series"][0]["profile"]["hour_weekday"]
    assert hw[2][2] > 1.8 * hw[2][4]


def test_a_sites_own_holiday_on_its_local_date_applies_to_its_link_only():
    """Tokyo's holiday (a local date, 15:00 UTC the day before to 15:00 UTC) at weekend level:
    listed for tyo:wan in its zone it raises nothing; the other link is unaffected."""
    start = 1788739200                      # 2026-09-07, a Monday
    t, rate = _local_world("Asia/Tokyo", start, 21, job=False, holiday="2026-09-23")
    t2, rate2 = _local_world("UTC", start, 21, job=False, seed=9)
    rec = td.Records.concat([records(t, rate, link="tyo:wan"), records(t2, rate2, link="lon:wan")])
    plain = ta.analyze(rec, {"timezones": {"tyo:wan": "Asia/Tokyo"}})
    assert [a for a in plain["anomalies"] if a["link"] == "tyo:wan"], kinds(plain)
    r = ta.analyze(rec, {"timezones": {"tyo:wan": "Asia/Tokyo"}, "link_holidays": {"tyo:wan": ["2026-09-23"]}})
    assert r["anomalies"] == [], [(a["kind"], a["link"], a["start"]) for a in r["anomalies"]]


def test_one_links_missing_hours_are_its_gap_not_an_outage():
    n = 21 * PER_DAY
    t, rate = seasonal_rate(n, seed=10)
    t2, rate2 = seasonal_rate(n, seed=11)
    rec = td.Records.concat([records(t, rate, link="a"), records(t2, rate2, link="b")])
    g0 = T0 + 14 * 86400 + 9 * 3600
    drop = (rec.codes["link"] == rec.cats["link"].index("a")) & (rec.ints["ts"] >= g0) & (rec.ints["ts"] < g0 + 3 * 3600)
    keep = ~drop
    gapped = td.Records(dict((k, v[keep]) for k, v in rec.ints.items()), dict((k, v[keep]) for k, v in rec.codes.items()),
                        rec.cats)
    r = ta.analyze(gapped)
    assert r["gaps"] == [{"link": "a", "start": g0, "end": g0 + 3 * 3600 - 1, "bins": 36}]
    assert not _overlapping(r, g0, g0 + 3 * 3600), r["anomalies"]


def test_a_record_of_a_million_times_the_bytes_inside_a_drift_is_reported():
    """Issue 24, point 6: one record carrying 1e6 times a bin's bytes in the middle of a
    drift went unreported (the drift's window swallowed it)."""
    n = 28 * PER_DAY
    t, rate = seasonal_rate(n, seed=12, noise=0.04)
    rate = rate.copy()
    ramp = (t >= T0 + 12 * 86400) & (t < T0 + 15 * 86400)
    rate[ramp] *= np.linspace(1.0, 2.2, int(ramp.sum()))
    hit = int(np.flatnonzero(t >= T0 + 14 * 86400 + 3 * 3600)[0])
    extra = np.zeros(n)
    extra[hit] = 1e6 * rate[hit]
    r = ta.analyze(records(t, rate, carry={4: extra}))
    found = _overlapping(r, int(t[hit]), int(t[hit]) + STEP - 1)
    spikes = [a for a in found if a["kind"] == "spike"]
    assert spikes and spikes[0]["magnitude"] > 1e5, kinds(r)
    assert spikes[0]["top_contributors"][0]["value"] == "10.0.4.0/24"
    assert any(a["kind"] == "drift" for a in r["anomalies"]), kinds(r)


# ------------------------------------------------------------------ the fast medians

_FLOATS = st.lists(st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(float("nan")), st.sampled_from([0.0, 1.0, -1.0])),
                   min_size=0, max_size=60)


@settings(max_examples=300, deadline=None)
@given(values=_FLOATS, w=st.integers(1, 40))
def test_fast_medians_equal_numpys_nanmedian(values, w):
    """row_nanmedian and sliding_nanmedian replace np.nanmedian on windows (for speed): the
    same values, bit for bit, NaN for a window with no number, ties and repeats included."""
    pad = np.concatenate([np.full(w, np.nan), np.asarray(values, dtype=float), np.full(w, np.nan)])
    view = np.lib.stride_tricks.sliding_window_view(pad, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = np.nanmedian(view, axis=1)
    assert np.array_equal(ta.row_nanmedian(view), want, equal_nan=True)
    assert np.array_equal(ta.sliding_nanmedian(pad, w), want, equal_nan=True)


def test_a_sustained_moderate_spike_is_one_spike_a_short_burst_of_that_size_is_none():
    """+60 % for 20 minutes is a spike (at least spike_min_sustained for at least
    spike_sustained seconds), reported once although one of its bins falls under the
    threshold; the same +60 % for 10 minutes is a burst like many, below spike_min."""
    n = 14 * PER_DAY
    t, rate = seasonal_rate(n, noise=0.03)
    rate = rate.copy()
    a, b = 9 * PER_DAY + 140, 11 * PER_DAY + 140
    rate[a:a + 4] *= [1.6, 1.6, 1.3, 1.6]            # 20 minutes, the third bin only +30 % (about 5 sigmas)
    rate[b:b + 2] *= 1.6                              # 10 minutes
    found = kinds(ta.analyze(records(t, rate)))
    spikes = [d for k, d in found if k == "spike"]
    assert spikes == [round((a * STEP) / 86400.0, 2)], found
    # with spike_min_sustained as high as spike_min, the 20 minutes are not enough either
    assert not [k for k, _d in kinds(ta.analyze(records(t, rate), {"spike_min_sustained": 1.0})) if k == "spike"]


def test_a_link_wide_outage_is_attributed_to_the_link_a_carried_dip_to_its_prefix():
    """When every prefix drops alike, the contributor is the link itself (no prefix stands
    out); when one prefix with 60 % of the bytes stops, it is that prefix, not the link."""
    n = 14 * PER_DAY
    t, rate = seasonal_rate(n, noise=0.03)
    whole = rate.copy()
    a = 9 * PER_DAY + 120
    whole[a:a + 24] *= 0.1                                 # 2 hours at -90 %, every prefix
    r = ta.analyze(records(t, whole, prefixes=4))
    out = [x for x in r["anomalies"] if x["kind"] == "outage"]
    assert out and out[0]["top_contributors"][0]["dimension"] == "link", r["anomalies"]
    assert out[0]["top_contributors"][0]["value"] == "dc1:up" and out[0]["top_contributors"][0]["share_of_change"] == 1.0
    carried = np.zeros(n)
    carried[:] = rate * 8                                 # prefix 3 carries most of the link...
    carried[a:a + 24] = 0                                 # ...and stops for 2 hours
    r = ta.analyze(records(t, rate, prefixes=3, carry={3: carried}))
    ev = [x for x in r["anomalies"] if x["start"] <= t[a + 23] and x["end"] >= t[a]]
    assert ev, r["anomalies"]
    assert ev[0]["top_contributors"][0]["dimension"] == "prefix" and ev[0]["top_contributors"][0]["value"] == "10.0.3.0/24"
    assert all(c["dimension"] != "link" for x in ev for c in x["top_contributors"])
    # its size is the link's drop, -89 % (8 of 9 parts stop); with two weeks of data the
    # expected shape once took in half the outage (the median of two Mondays) and said -66 %
    assert -0.93 <= ev[0]["magnitude"] <= -0.85 and -0.93 <= out[0]["magnitude"] <= -0.85, (ev[0], out[0])


@pytest.mark.parametrize("seed", [1, 4])
def test_a_step_on_a_noisy_link_is_a_level_shift_where_it_happens(seed):
    """+70 % at one bin on a link with 40 % noise per bin: the 6-hour windows are too noisy to
    see it, the day-long ones see it; it is still a step (most of the change within an hour),
    so a level shift at the step, not a drift starting half a day before it."""
    n = 21 * PER_DAY
    t, rate = seasonal_rate(n, seed=seed, noise=0.4)
    rate = rate.copy()
    a = 10 * PER_DAY + 150
    rate[a:] *= 1.7
    r = ta.analyze(records(t, rate))
    first = min(r["anomalies"], key=lambda x: abs(x["start"] - t[a]))
    assert first["kind"] == "level_shift" and abs(first["start"] - t[a]) <= 3600, r["anomalies"]


@pytest.mark.parametrize("days_after", [4, 6])
def test_growth_across_a_recent_step_is_the_whole_historys(days_after):
    """+60 %/year growth, then a step to 0.4x a few days before the end: the slope is the
    whole history's with the step taken out (from 4 days after the step alone it was
    +10^14 %/year), and the projection starts from the level after the step."""
    n = 40 * PER_DAY
    t, rate = seasonal_rate(n, noise=0.05, growth=0.6)
    step_at = T0 + (40 - days_after) * 86400
    rate = np.where(t >= step_at, rate * 0.4, rate)
    p = ta.analyze(records(t, rate), {"horizon_days": 90})["projection"][0]
    assert p["level_shift"] and 0.35 < p["level_shift"]["ratio"] < 0.45, p.get("level_shift")
    lo, hi = p["growth_per_year_interval"]
    assert 0.0 < p["growth_per_year"] < 1.5 and lo <= 0.6 <= hi and hi < 20, (p["growth_per_year"], lo, hi)
    # from the level after the step (the day 30 ahead may be a weekend, at 60 %), not 2.5x above
    assert 0.5 * p["last_day_p95_bps"] < p["p95_in_30d"]["point_bps"] < 1.5 * p["last_day_p95_bps"]


def test_a_step_in_the_last_days_is_named_on_the_projection():
    """A level shift 1.5 days before the end is too recent for the projection (3 whole days
    on each side of a step): the projection says so instead of reading it as growth."""
    n = 30 * PER_DAY
    t, rate = seasonal_rate(n, noise=0.05)
    rate = np.where(t >= T0 + int(28.5 * 86400), rate * 0.4, rate)
    r = ta.analyze(records(t, rate))
    p = r["projection"][0]
    assert any(a["kind"] == "level_shift" for a in r["anomalies"]), r["anomalies"]
    assert p["recent_change"]["kind"] == "level_shift" and "too recent" in p["note"], p


def test_growth_interval_holds_with_autocorrelated_days():
    """Daily levels that wander (AR(1), rho 0.8, as busy weeks do) around +100 %/year: the
    slope's 90 % interval, widened for the autocorrelation, holds the true growth in at least
    8 of 10 fixed draws (without the widening: 6 of 10)."""
    held = 0
    for seed in range(1, 11):
        n = 42 * PER_DAY
        t, rate = seasonal_rate(n, seed=seed, noise=0.05, growth=1.0)
        rng = np.random.default_rng(100 + seed)
        level = np.zeros(42)
        for d in range(1, 42):
            level[d] = 0.8 * level[d - 1] + rng.normal(0, 0.08)
        p = ta.analyze(records(t, rate * np.exp(np.repeat(level, PER_DAY))))["projection"][0]
        lo, hi = p["growth_per_year_interval"]
        held += lo <= 1.0 <= hi
    assert held >= 8, held


def test_pieces_of_one_drift_are_one_alert():
    """The day windows' threshold can cut one slow ramp into pieces minutes apart: drifts of
    one link going the same way less than an hour apart are one alert; a drift the other way,
    or spikes, are not joined across a gap."""
    def ev(kind, start, end, mag):
        return {"kind": kind, "link": "a", "directions": ["in"], "start": start, "end": end, "score": 5.0,
                "magnitude": mag, "top_contributors": []}
    h = 3600
    got = ta._combine([ev("drift", 0, 7 * h, 0.3), ev("drift", 7 * h + 600, 8 * h, 0.28), ev("drift", 8 * h + 1800, 9 * h, 0.29),
                       ev("drift", 9 * h + 600, 12 * h, -0.5), ev("spike", 20 * h, 20 * h + 300, 2.0),
                       ev("spike", 20 * h + 1200, 20 * h + 1500, 2.0)], 6 * h)
    assert [(a["kind"], a["start"], a["end"]) for a in got] == [
        ("drift", 0, 9 * h), ("drift", 9 * h + 600, 12 * h), ("spike", 20 * h, 20 * h + 300), ("spike", 20 * h + 1200, 20 * h + 1500)]


def test_series_analysed_in_two_processes_give_the_same_result(monkeypatch):
    """From PARALLEL_MIN_RECORDS records, two of every three series are analysed in a forked child:
    the result is the one process's, to the last bit of every float (it comes back as JSON,
    which writes floats exactly), series and anomalies in the same order."""
    from ansible_collections.netstack.tuning.tools import trafficgen
    import json
    rec, _labels, _truth = trafficgen.generate(seed=3, sites=2, days=14)

    def run(least):
        monkeypatch.setattr(ta, "PARALLEL_MIN_RECORDS", least)
        r = ta.analyze(rec)
        return json.dumps(dict((k, v) for k, v in r.items() if k not in ("analysis_seconds", "records_per_second")),
                          sort_keys=True)
    one, two = run(1 << 60), run(0)
    assert len(json.loads(one)["series"]) >= 4 and json.loads(one)["anomalies"]
    assert two == one
