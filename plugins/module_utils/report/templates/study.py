# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sysctl study report's page (tuning/study.py render_report), a Jinja2 template
rendered by report/templating.py with autoescaping on."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

NAME = "study.html.j2"

SOURCE = """\
<!doctype html><html><head><meta charset='utf-8'><title>{{ title }}</title>
<style>body{font-family:sans-serif;max-width:980px;margin:2em auto}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>
<h1>{{ title }}</h1>
<p>study <b>{{ study_name }}</b> ({{ storage }}, sampler {{ sampler }}, objectives {{ objectives }}), host {{ host }}: {{ trials }} trials. \
<b>{{ "Accepted" if accepted else "Not accepted" }}</b>: {{ reason }}</p>
{% if client %}
<p>Remote client <b>{{ client }}</b> requested {{ target_url }}; each trial changed {{ changed }} and was rolled back through the journal.</p>
{% elif tune_client %}
<p>Each trial set its per-namespace keys in the lab's client namespace (wrk's) as well as the server's.</p>
{% endif %}
{% if pruned %}
<p>{{ pruned }} trial(s) pruned after their first run{% if halving %} (successive halving: the best 1/{{ halving }} of first runs went on){% endif %}.</p>
{% endif %}
{% for chart in charts %}
{{ chart }}
{% endfor %}
{% if verification %}
{{ verification.box_plot }}
<h2>Verification ({{ verification.rounds }} interleaved rounds)</h2><table><tr><th>arm</th><th>p99 median ms</th><th>p99 IQR</th>\
<th>p99.9 median ms</th><th>req/s median</th><th>errors</th></tr>
{% for row in verification.rows %}
<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{% if verification.distribution %}
{{ verification.distribution }}
{% endif %}
<ul>
{% for c in verification.comparisons %}
<li>{{ c.label }}: p99 ratio {{ c.ratio }} (95% CI {{ c.lo }}-{{ c.hi }}), {{ c.test }}: p={{ c.p_value }}</li>
{% endfor %}
</ul>
{% endif %}
{% if best %}
<h2>Best set (trial {{ best.trial }})</h2><table><tr><th>sysctl</th><th>value</th><th>default</th><th>why it is in the space</th></tr>
{% for key, value, default, reason in best.rows %}
<tr><td>{{ key }}</td><td>{{ value }}</td><td>{{ default }}</td><td style='text-align:left'>{{ reason }}</td></tr>
{% endfor %}
</table>
{% endif %}
</body></html>"""
