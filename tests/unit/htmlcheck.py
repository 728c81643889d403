"""What the HTML report tests ask of a page: the elements and attributes a browser would make
of it, and its text, so a test can say that hostile user data shows as text and never as
markup (the reports' templates escape it: plugins/module_utils/report/templating.py)."""
from html.parser import HTMLParser

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
IMG_SQ = "'><img src=x onerror=alert(2)>"     # breaks out of a single-quoted attribute


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.values, self.text = set(), set(), [], []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs.update(k for k, _v in attrs)
        self.values += [v for _k, v in attrs if v]

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def parse(page):
    p = _Page()
    p.feed(page)
    p.close()
    return p


def assert_inert(page, *values):
    """No script or img element and no event handler anywhere in ``page``, and each of
    ``values`` is there as text (or an attribute's value), escaped in the source."""
    p = parse(page)
    assert not {"script", "img"} & p.tags, p.tags
    assert not [a for a in p.attrs if a.startswith("on")], p.attrs
    text = "".join(p.text)
    for v in values:
        assert v in text or any(v in x for x in p.values), v
        assert v not in page, "%r is in the page unescaped" % v
