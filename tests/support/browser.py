"""Render an HTML report in a real browser (Debian's chromium-headless-shell) and check what
a reader sees: every plot has drawn marks inside its frame, no plot text leaves its plot, and
the page does not overflow the window sideways.  A screenshot is kept as an artifact.

    problems = check(path_to_html, screenshot="build/reports/name.png")

`check` returns a list of problems (empty: the page reads well) and the raw measurements."""
import json
import os
import re
import shutil
import subprocess
import tempfile

BROWSER_NAMES = ("chromium-headless-shell", "chromium", "chromium-browser")
WIDTH = 1280

# Runs in the page once it has loaded; leaves its findings as JSON in <pre id=browser-check>.
PROBE = r"""
<script>
(function () {
  var out = {plots: [], page: {}};
  function inside(b, w, h) { return b.width + b.height > 0 && b.x < w && b.y < h && b.x + b.width > 0 && b.y + b.height > 0; }
  function dims(svg) {
    var vb = svg.viewBox && svg.viewBox.baseVal;
    if (vb && vb.width) return [vb.width, vb.height];
    return [svg.width.baseVal.value, svg.height.baseVal.value];
  }
  document.querySelectorAll("svg").forEach(function (svg, i) {
    var wh = dims(svg), w = wh[0], h = wh[1], marks = 0, outside = [];
    var title = svg.querySelector("text");
    svg.querySelectorAll("circle, polyline, path, polygon, rect").forEach(function (e) {
      var fill = (e.getAttribute("fill") || "").toLowerCase(), stroke = (e.getAttribute("stroke") || "").toLowerCase();
      if (e.tagName === "rect" && (e.getAttribute("width") === "100%" || fill === "none" || fill === "white" || fill === "#fff" || fill.replace(/\s/g, "") === "rgb(255,255,255)")) return;
      if ((e.tagName === "polyline" || e.tagName === "path") && (stroke === "" || stroke === "none") && (fill === "" || fill === "none")) return;
      var b = e.getBBox();
      if (e.tagName === "polyline" && b.width === 0 && b.height === 0) return;   // a one-point line draws nothing
      if (inside(b, w, h)) marks += 1;
    });
    // on screen, after transforms (a rotated axis label's own bbox is not where it is drawn)
    var frame = svg.getBoundingClientRect();
    svg.querySelectorAll("text").forEach(function (t) {
      var b = t.getBoundingClientRect();
      if (!t.textContent.trim()) return;
      if (b.left < frame.left - 1 || b.top < frame.top - 1 || b.right > frame.right + 1 || b.bottom > frame.bottom + 1)
        outside.push(t.textContent.trim().slice(0, 60));
    });
    out.plots.push({index: i, title: title ? title.textContent.trim().slice(0, 80) : "", marks: marks,
                    text_outside: outside, width: w, height: h});
  });
  out.page = {scroll_width: document.documentElement.scrollWidth, window_width: window.innerWidth};
  var pre = document.createElement("pre");
  pre.id = "browser-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def browser():
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args, timeout=60):
    if not browser():
        raise AssertionError("no headless Chromium found (%s): scripts/bootstrap.sh installs chromium-headless-shell"
                             % ", ".join(BROWSER_NAMES))
    return subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=%d,2000" % WIDTH] + args,
                          capture_output=True, text=True, timeout=timeout)


def measure(path):
    """What PROBE measured in the page at `path`."""
    with open(path, encoding="utf-8") as f:
        page = f.read()
    probed = page.replace("</body>", PROBE + "</body>") if "</body>" in page else page + PROBE
    with tempfile.TemporaryDirectory(prefix="nsbrowser-") as tmp:
        # next to the original's directory layout is not needed: reports are self-contained
        copy = os.path.join(tmp, os.path.basename(path))
        with open(copy, "w", encoding="utf-8") as f:
            f.write(probed)
        res = _run(["--virtual-time-budget=5000", "--dump-dom", "file://" + copy])
    m = re.search(r'<pre id="browser-check">(.*?)</pre>', res.stdout, re.S)
    if not m:
        raise AssertionError("the browser rendered no result for %s (rc %d): %s" % (path, res.returncode, res.stderr[-800:]))
    text = m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return json.loads(text)


def screenshot(path, png):
    os.makedirs(os.path.dirname(png) or ".", exist_ok=True)
    _run(["--virtual-time-budget=3000", "--screenshot=%s" % png, "--window-size=%d,4000" % WIDTH,
          "file://" + os.path.abspath(path)])
    return os.path.exists(png)


def check(path, shot=None):
    """Problems a reader of `path` would meet, and the measurements."""
    got = measure(path)
    problems = []
    for p in got["plots"]:
        name = "plot %d (%s)" % (p["index"], p["title"] or "untitled")
        if p["marks"] == 0:
            problems.append("%s draws no marks" % name)
        if p["text_outside"]:
            problems.append("%s has text outside its frame: %s" % (name, p["text_outside"][:3]))
    pg = got["page"]
    if pg["scroll_width"] > pg["window_width"] + 1:
        problems.append("the page is %d px wide in a %d px window" % (pg["scroll_width"], pg["window_width"]))
    if shot:
        screenshot(path, shot)
    return problems, got
