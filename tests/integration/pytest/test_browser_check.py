"""The browser check the report tests rely on (tests/support/browser.py) must see what a
reader sees: each case below is a page with one known defect, rendered by the real headless
Chromium, and the check must name exactly that defect; a sound page passes."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "collections"))
import browser  # noqa: E402
from ansible_collections.netstack.tuning.plugins.module_utils.report import svgplot  # noqa: E402

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="100" viewBox="0 0 300 100">%s</svg>'
BG = '<rect width="100%" height="100%" fill="white"/><text x="4" y="14">title</text>'
CASES = {
    "sound": (SVG % (BG + '<polyline fill="none" stroke="#1f77b4" points="10,90 150,20 290,50"/>'), None),
    "no_marks": (SVG % BG, "draws no marks"),
    "one_point_line": (SVG % (BG + '<polyline fill="none" stroke="#1f77b4" points="10,90"/>'), "draws no marks"),
    "text_outside": (SVG % (BG + '<rect x="10" y="10" width="20" height="20" fill="#1f77b4"/>'
                            '<text x="250" y="50">a label far too long for this plot</text>'), "text outside its frame"),
    "wide_page": (SVG % (BG + '<circle cx="50" cy="50" r="3" fill="#1f77b4"/>') + '<div style="width:3000px">x</div>',
                  "px wide in a"),
}


def _page(tmp_path, name, body):
    path = tmp_path / (name + ".html")
    path.write_text("<!DOCTYPE html><html><body>%s</body></html>" % body)
    return str(path)


def test_the_check_names_each_defect_and_passes_a_sound_page(tmp_path):
    for name, (body, defect) in CASES.items():
        problems, _ = browser.check(_page(tmp_path, name, body))
        if defect is None:
            assert problems == [], (name, problems)
        else:
            assert len(problems) == 1 and defect in problems[0], (name, problems)


def test_the_plots_with_little_data_read_well(tmp_path):
    """One bin, one cell, one bar: each draws something inside its frame."""
    plots = [svgplot.line_chart({"in": [(0, 5.0)]}, "one bin", "t", "bit/s"),
             svgplot.heatmap(["Mon"], ["00"], [[3.0]], "one cell"),
             svgplot.bar_chart([("localhost:nsite0 in", 1.2)], "one bar", "kbit/s")]
    shot = str(ROOT / "build" / "reports" / "little-data.png")
    problems, seen = browser.check(_page(tmp_path, "little", "".join(plots)), shot=shot)
    assert not problems, problems
    assert [p["marks"] > 0 for p in seen["plots"]] == [True, True, True], seen["plots"]
    assert os.path.getsize(shot) > 0
