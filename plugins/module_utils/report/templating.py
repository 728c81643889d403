# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the HTML reports are made: a Jinja2 template rendered with autoescaping on,
so every value a page shows (host and link names, labels, notes, messages) is escaped by
the template; only the SVG charts of svgplot, markup this collection made itself, go in
as it is, through ``trusted()``.

The templates are Python modules of report/templates/ (one per page), not .j2 files: the
traffic report is rendered inside the traffic_profile module, whose AnsiballZ zip carries
the Python files its imports reach and nothing else, so a template file would be missing
there.  The reports are rendered on the controller only (filters, action plugins,
traffic_profile delegated to the controller's own Python); jinja2 and markupsafe come with
ansible-core there and are imported only when a page is rendered."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

_ENV = []


def _finalize(value):
    # None shows as nothing, as the string-built pages had it
    return "" if value is None else value


def environment():
    """The reports' Jinja2 environment (made once): autoescape on, undefined names an error,
    block tags take their own line's newline (trim_blocks, lstrip_blocks)."""
    if not _ENV:
        import jinja2
        _ENV.append(jinja2.Environment(loader=jinja2.DictLoader({}), autoescape=True, undefined=jinja2.StrictUndefined,
                                       trim_blocks=True, lstrip_blocks=True, finalize=_finalize))
    return _ENV[0]


def render(name, source, **context):
    """The page ``source`` (a template of report/templates/, known as ``name``) rendered with
    ``context``, as a plain str."""
    env = environment()
    env.loader.mapping.setdefault(name, source)
    return str(env.get_template(name).render(**context))


def trusted(markup):
    """``markup`` made by this collection (svgplot's SVG charts), inserted by a template as it
    is; never for anything that holds unescaped user data."""
    from markupsafe import Markup
    return Markup(markup)
