# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The zero-copy fleet report's page (zerocopy/report.py), a Jinja2 template rendered by
report/templating.py with autoescaping on."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

NAME = "zerocopy.html.j2"

SOURCE = """\
<!doctype html><html><head><meta charset='utf-8'><title>{{ title }}</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 7px;text-align:right}\
td:first-child,th:first-child{text-align:left}.na{color:#999}.verdict-zerocopy{color:#2ca02c}.verdict-copies-by-design{color:#7f7f7f}\
</style></head><body>
<h1>{{ title }}</h1>
<h2>Fleet summary</h2><table><tr><th>host</th><th>kernel</th><th>helper</th><th>SO_ZEROCOPY</th><th>io_uring SEND_ZC</th>\
<th>SCM_ZC_NOTIFICATION</th><th>verdicts</th></tr>
{% for h in fleet %}
{% if h.failed %}
<tr><td>{{ h.host }}</td><td colspan='6' style='text-align:left'>failed: {{ h.msg }}</td></tr>
{% else %}
<tr><td>{{ h.host }}</td><td>{{ h.release }}</td><td>{{ h.kind }}</td><td>{{ h.so_zerocopy }}</td><td>{{ h.send_zc }}</td><td>{{
  h.zc_cmsg }}</td><td style='text-align:left'>{% for verdict, path, proto, text in h.verdicts %}{% if not loop.first %}<br>{% endif %}\
<span class='verdict-{{ verdict }}'>{{ path }}/{{ proto }}: {{ text }}</span>{% endfor %}</td></tr>
{% endif %}
{% endfor %}
</table>
{% if notes %}
<ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>
{% endif %}
{% for h in hosts %}
<h2>{{ h.host }}</h2>
{% for mode, why in h.unsupported %}
<p class='na'>{{ mode }} unsupported: {{ why }}</p>
{% endfor %}
{% for g in h.groups %}
<h3>{{ g.path }}, {{ g.proto }}</h3><table><tr><th>size</th>{% for m in g.modes %}<th>{{ m }} Gbit/s</th>{% endfor %}\
{% for m in g.modes %}<th>{{ m }} CPU s/GB tx / rx</th>{% endfor %}{% for m in g.zc_modes %}<th>{{ m }} copied % / compl per notif</th>{% endfor %}</tr>
{% for r in g.rows %}
<tr><td>{{ r.size }}</td>{% for text, ok in r.throughput %}{% if ok %}<td>{% else %}<td class='na'>{% endif %}{{ text }}</td>{% endfor %}\
{% for text in r.cpu + r.zerocopy %}{% if text is none %}<td class='na'>-</td>{% else %}<td>{{ text }}</td>{% endif %}{% endfor %}</tr>
{% endfor %}
</table>
{% if g.crossover %}
<p>crossover: {% for mode, baseline, throughput, cpu in g.crossover %}{% if not loop.first %}; {% endif %}\
{{ mode }} vs {{ baseline }}: throughput {{ throughput }}, sender CPU/GB {{ cpu }}{% endfor %}</p>
{% endif %}
{% endfor %}
{% for plot in h.plots %}
{{ plot }}
{% endfor %}
{% endfor %}
</body></html>"""
