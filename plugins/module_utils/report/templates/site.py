# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report's page (report/site.py), a Jinja2 template rendered by
report/templating.py with autoescaping on."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

NAME = "site.html.j2"

SOURCE = """\
{% macro table(head, rows) -%}
<table><tr>{% for h in head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}
<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}
</table>
{%- endmacro -%}
<!DOCTYPE html><html><head><meta charset=utf-8><title>{{ title }}</title><style>body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}.bad{color:#b00}.ok{color:#070}.muted{color:#777}h2{border-bottom:2px solid #ddd;margin-top:2em}
code{background:#f6f6f6}</style></head><body>
<h1>{{ title }}</h1>
<p class=muted>{{ host_count }}; generated {{ generated }} UTC</p>
{% if after %}
<h2>After the rollback</h2>
<p>Everything below was measured while the capabilities were applied; this is each host once the job had taken them back.</p>
<table><tr><th>host</th><th>journal entries in force</th><th>BPF pins</th><th>agent</th><th>state</th></tr>
{% for h in after %}
<tr><td>{{ h.name }}</td><td>{{ h.in_force }}</td><td>{{ h.pins }}</td><td>{{ h.agent }}</td><td>{%
  if h.clean %}<span class="ok">as before netstack</span>{% else %}<span class="bad">changes remain</span>{% endif %}</td></tr>
{% endfor %}
</table>
{% endif %}
<h2>Fleet</h2>
<table><tr><th>host</th><th>kernel</th><th>CPUs</th><th>congestion control</th><th>sock_ops BPF</th><th>other tuners running</th>\
<th>journal in force / all</th><th>BPF pins</th><th>agent</th><th>site rollout</th></tr>
{% for h in fleet.rows %}
<tr>{% for c in h.cells %}<td>{{ c }}</td>{% endfor %}<td><span class="{{ h.cls }}">{{ h.status }}</span> {{ h.capabilities }}</td></tr>
{% endfor %}
</table>
{% if fleet.failed %}
<p class=bad>Rolled back: {% for name, error in fleet.failed %}{{ name }}: {{ error }}{{ "; " if not loop.last else "" }}{% endfor %}</p>
{% endif %}
{% if fleet.site %}
<p class=muted>site.yml finished {{ fleet.finished }}</p>
{% endif %}
{% if evidence %}
<h2>Evidence per capability</h2>
{% for ev in evidence %}
<h3>{{ ev.name }}</h3>
{% if ev.sysctl %}
<p><b>Sysctl profile</b> {{ ev.sysctl.name }} (namespace {{ ev.sysctl.netns }}): {{ ev.sysctl.count }} set, before and after:</p>
{{ table(["key", "before", "after"], ev.sysctl.rows) }}
{% endif %}
{% if ev.tcp_rules %}
<p><b>TCP tuning</b>: connections each rule matched (and settings the kernel refused):</p>
{{ table(["rule", "sets", "connections", "refused"], ev.tcp_rules) }}
{% endif %}
{% if ev.shm %}
<p><b>Same-host path</b>: request/response ({{ ev.shm.size }} B, one in flight) on a port in the policy and on one outside it, \
interleaved; the path {% if ev.shm.on_path %}carried it{% else %}<span class=bad>did not carry it</span>{% endif %}.</p>
{{ table(["", "round trips/s", "RTT p50 (us)", "RTT p99 (us)"], ev.shm.rows) }}
<p class=muted>path counters over the run: {% for k, v in ev.shm.counters %}{{ k }} {{ v }}{{ ", " if not loop.last else "" }}{% endfor %}</p>
{% endif %}
{% if ev.amp %}
<p><b>AMP</b>: network CPUs {{ ev.amp.net_cpus }}, application CPUs {{ ev.amp.app_cpus }}.</p>
{% if ev.amp.softirq_rows %}
{{ table(["softirq during %s" % ev.amp.load] + ev.amp.cpus, ev.amp.softirq_rows) }}
{% endif %}
{% endif %}
{% endfor %}
{% endif %}
{% if tuning %}
<h2>Sysctl tuning</h2>
<p>The study's winner against the kernel defaults in the interleaved verification (p99 latency, medians); accepted only when \
significantly better.</p>
{{ table(["canary", "scenario", "accepted", "p99 defaults -> winner", "winner"], tuning) }}
{% endif %}
{% if zerocopy %}
<h2>Zero-copy</h2>
{% if zerocopy.link %}
<p><a href="{{ zerocopy.link }}">full report</a></p>
{% endif %}
<table><tr><th>host</th><th>path</th><th>protocol</th><th>verdict</th></tr>
{% for r in zerocopy.rows %}
<tr><td>{{ r.host }}</td><td>{{ r.path }}</td><td>{{ r.proto }}</td><td>{%
  if r.failed %}<span class=bad>{{ r.msg }}</span>{% else %}<b>{{ r.verdict }}</b>: {{ r.text }}{% endif %}</td></tr>
{% endfor %}
</table>
{% endif %}
{% if traffic %}
<h2>Traffic</h2>
{% if not traffic.rows %}
<p>no traffic recorded. {{ traffic.notes }}</p>
{% else %}
{% if traffic.link %}
<p><a href="{{ traffic.link }}">full report</a> (profile, anomalies, billing, projection)</p>
{% endif %}
{{ traffic.chart }}
{{ table(["link", "direction", "mean", "peak", "p95"], traffic.rows) }}
{% if traffic.anomalies %}
{{ table(["anomaly", "link", "start", "end", "score"], traffic.anomalies) }}
{% endif %}
{% if traffic.levels %}
{{ table(["link", "water level", "p95 utilisation"], traffic.levels) }}
{% endif %}
{% endif %}
{% endif %}
{% if journal %}
<h2>Journal (newest 10 per host)</h2>
{% for j in journal %}
<h3>{{ j.name }}</h3>
{{ table(["id", "time (UTC)", "state", "reason", "items"], j.rows) }}
{% endfor %}
{% endif %}
</body></html>"""
