# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The traffic insight report's page (traffic/report.py), a Jinja2 template rendered by
report/templating.py with autoescaping on.  A table is {"head": [...], "rows": [[cell]]};
a cell is (text, class, kind): kind None is plain text, "href" an in-page link (text is
(href, label)), "lines" several lines of text, "colspan" a note over the remaining four
columns."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

NAME = "traffic.html.j2"

SOURCE = """\
{% macro td(cell) -%}
{% set text, cls, kind = cell %}<td{% if kind == "colspan" %} colspan='4'{% endif %}{% if cls %} class='{{ cls }}'{% endif %}>{%
  if kind == "href" %}<a href='{{ text[0] }}'>{{ text[1] }}</a>{%
  elif kind == "lines" %}{% for line in text %}{% if not loop.first %}<br>{% endif %}{{ line }}{% endfor %}{%
  else %}{{ text }}{% endif %}</td>
{%- endmacro %}
{% macro table(t) -%}
<table><tr>{% for h in t.head %}<th>{{ h }}</th>{% endfor %}</tr>{% for row in t.rows %}<tr>{% for c in row %}{{ td(c) }}{% endfor %}</tr>{% endfor %}</table>
{%- endmacro %}
<!doctype html><html><head><meta charset='utf-8'><title>{{ title }}</title><style>\
body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}td:first-child,th:first-child{text-align:left}\
td.l{text-align:left}.na{color:#999}.lvl-ok{color:#2ca02c;font-weight:bold}\
.lvl-warn{color:#ff7f0e;font-weight:bold}.lvl-critical{color:#d62728;font-weight:bold}\
.st-failed{color:#d62728}svg{display:block;margin:.5em 0}details{margin:.3em 0}</style></head><body>
<h1>{{ title }}</h1>
<p>{{ summary }}</p>
{% if hosts %}
<h2>Data sources</h2>{{ table(hosts) }}
{% endif %}
{% if overview %}
<h2>Links</h2>{{ table(overview.table) }}<p class='na'>Water levels: warn at {{ overview.warn }} %, critical at {{ overview.critical }} % of \
capacity (95th percentile of the last day).</p>
{% else %}
<p class='na'>No links in this result.</p>
{% endif %}
{% for link in links %}
<h2 id='link-{{ loop.index }}'>Link {{ link.name }}</h2>
{% if link.series %}
{{ table(link.series) }}
{% endif %}
{% if link.chart %}
{{ link.chart }}
{% else %}
<p class='na'>(no traffic samples to plot for {{ link.name }})</p>
{% endif %}
{% if link.heatmaps %}
{{ link.heatmaps }}
{% endif %}
<h3>Anomalies</h3>
{% if link.anomalies %}
{{ table(link.anomalies.table) }}{% for d in link.anomalies.details %}<details><summary>#{{ d.n }} {{ d.what }} at {{ d.start }} UTC: \
top contributors</summary>{{ table(d.table) }}</details>{% endfor %}

{% else %}
<p>No anomalies detected on this link.</p>
{% endif %}
<h3>95th-percentile billing</h3>
{% if link.billing %}
{{ table(link.billing) }}
{% else %}
<p class='na'>No billing data.</p>
{% endif %}
<h3>Water levels</h3>
{% if link.water %}
{{ table(link.water) }}
{% else %}
<p class='na'>No capacity set for this link: no water levels or capacity lines.</p>
{% endif %}
<h3>Capacity projection</h3>
{% if link.projection %}
{{ table(link.projection) }}
{% else %}
<p class='na'>No projection.</p>
{% endif %}
{% if link.projection_charts %}
{{ link.projection_charts }}
{% endif %}
{% endfor %}
{% if talkers %}
<h2>Top talkers (all links)</h2>{% for chart in talkers.charts %}{{ chart }}{% endfor %}{{ table(talkers.table) }}
{% endif %}
{% if options %}
<p class='na'>analysis options: {{ options }}</p>
{% endif %}
</body></html>"""
