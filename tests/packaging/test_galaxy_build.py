"""The collection as users get it: `ansible-galaxy collection build` of the checkout's files,
`ansible-galaxy collection install` of the tarball into an empty path, then `ansible-doc`
of every module, role and documented filter from there, with nothing of this checkout on
the collections path.

The copy also gets the junk a working checkout has (virtualenv, caches, build output, raw
benchmark dirs) so the test shows galaxy.yml's build_ignore keeps it out of the tarball.
Run: .venv/bin/python -m pytest tests/packaging -q   (make packaging)"""
import ast
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
MAX_TARBALL = 5 * 1024 * 1024       # ~0.7 MB today; more means something big slipped in

JUNK = [".venv/bin/python3", ".git/HEAD", ".cache/vm/rootfs.qcow2", ".pytest_cache/README.md",
        ".ansible/collections/x.txt", "build/sanity/x.txt", "tests/output/junit.xml",
        "benchmarks/results/run1.raw/wrk.txt", "plugins/modules/__pycache__/sysctl_set.cpython-311.pyc",
        "plugins/module_utils/journal.pyc", "inventories/lab/generated/hosts.yml", "netstack-tuning-0.0.1.tar.gz"]


def run(cmd, **kw):
    kw.setdefault("timeout", 180)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False, **kw)
    command = " ".join(map(str, cmd))
    assert proc.returncode == 0, "%s\nrc %s\n%s\n%s" % (command, proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(tarball, member names, clean collections path, environment that sees only it)."""
    if not (BIN / "ansible-galaxy").exists():
        pytest.skip("no .venv (make setup)")
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("galaxy")
    src, out, clean = tmp / "src", tmp / "out", tmp / "collections"
    files = run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO).splitlines()
    for name in files:
        source, target = REPO / name, src / name
        if not os.path.lexists(source):
            continue                      # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():           # collections/ansible_collections/netstack/tuning -> ../../..
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    for name in JUNK:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("junk\n")
    # nothing of the caller's environment: with the checkout's ansible.cfg (make exports it),
    # `install` would find netstack.tuning already there and install nothing
    (tmp / "empty.cfg").write_text("")
    (tmp / "home").mkdir()
    env = {"PATH": "%s:/usr/bin:/bin" % BIN, "HOME": str(tmp / "home"), "LANG": "C.UTF-8",
           "ANSIBLE_CONFIG": str(tmp / "empty.cfg"), "ANSIBLE_COLLECTIONS_PATH": str(clean),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(tmp / "home" / "tmp")}
    run([BIN / "ansible-galaxy", "collection", "build", src, "--output-path", out], cwd=tmp, env=env)
    (tarball,) = out.glob("netstack-tuning-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    run([BIN / "ansible-galaxy", "collection", "install", "--offline", tarball, "-p", clean], cwd=tmp, env=env)
    assert (clean / "ansible_collections" / "netstack" / "tuning" / "MANIFEST.json").is_file()
    print("\ntarball %s: %d bytes, %d members; built and installed in %.1f s"
          % (tarball.name, tarball.stat().st_size, len(names), time.monotonic() - started))
    return {"tarball": tarball, "names": names, "clean": clean, "env": env, "cwd": tmp}


def members(built, pattern):
    return sorted(n for n in built["names"] if re.fullmatch(pattern, n))


def doc(built, *args):
    return run([BIN / "ansible-doc", *args], env=built["env"], cwd=built["cwd"])


def short_description(source):
    """DOCUMENTATION's short_description of a module file, read without importing it."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DOCUMENTATION" for t in node.targets):
            return yaml.safe_load(node.value.value)["short_description"]
    raise AssertionError("no DOCUMENTATION")


def test_tarball_contents(built):
    names, size = built["names"], built["tarball"].stat().st_size
    assert 0 < size < MAX_TARBALL, size
    assert "MANIFEST.json" in names and "FILES.json" in names
    manifest = json.loads(tarfile.open(built["tarball"]).extractfile("MANIFEST.json").read())
    assert manifest["collection_info"]["namespace"] == "netstack" and manifest["collection_info"]["name"] == "tuning"
    assert members(built, r"plugins/modules/\w+\.py") == sorted(
        "plugins/modules/%s" % p.name for p in (REPO / "plugins" / "modules").glob("*.py") if p.name != "__init__.py")
    assert members(built, r"roles/\w+/meta/argument_specs\.yml") == sorted(
        str(p.relative_to(REPO)) for p in REPO.glob("roles/*/meta/argument_specs.yml"))
    for must in ("meta/runtime.yml", "README.md", "plugins/module_utils/core/journal.py", "bpf/tcp_tuning.bpf.c",
                 "src/zc_bench.c", "awx/job_templates.yml", "execution-environment.yml",
                 "plugins/module_utils/report/templating.py", "plugins/module_utils/report/templates/traffic.py"):
        assert must in names
    for junk in JUNK:
        assert junk not in names
    bad = [n for n in names if re.search(r"(^|/)(\.git|\.venv|\.cache|\.pytest_cache|\.ansible|__pycache__|build|"
                                         r"collections)(/|$)|\.pyc$|^tests/output/|\.raw(/|$)", n)]
    assert bad == []


def test_modules_documented_from_the_installed_collection(built):
    modules = [Path(n).stem for n in members(built, r"plugins/modules/\w+\.py")]
    names = ["netstack.tuning.%s" % m for m in modules]
    installed = built["clean"] / "ansible_collections" / "netstack" / "tuning"
    docs = json.loads(doc(built, "-t", "module", "-j", *names))
    assert sorted(docs) == sorted(names)
    for m, name in zip(modules, names):
        d = docs[name]["doc"]
        assert d["filename"].startswith(str(installed)), "%s documented from %s" % (name, d["filename"])
        assert d["short_description"] == short_description((installed / "plugins" / "modules" / (m + ".py")).read_text())
        assert docs[name]["examples"] and docs[name]["return"] is not None
    text = doc(built, "-t", "module", *names)            # the text rendering works too
    for name in names:
        assert re.search(r"^> MODULE \*?%s\*? \(%s/" % (re.escape(name), re.escape(str(installed))), text, re.M), name
    listed = doc(built, "-t", "module", "-l", "netstack.tuning")
    assert sorted(re.findall(r"^(netstack\.tuning\.\w+)\s", listed, re.M)) == sorted(names)


def test_roles_documented_from_the_installed_collection(built):
    roles = [n.split("/")[1] for n in members(built, r"roles/\w+/meta/argument_specs\.yml")]
    names = ["netstack.tuning.%s" % r for r in roles]
    installed = built["clean"] / "ansible_collections" / "netstack" / "tuning"
    text = doc(built, "-t", "role", *names)
    for role, name in zip(roles, names):
        specs = yaml.safe_load((installed / "roles" / role / "meta" / "argument_specs.yml").read_text())
        header = re.search(r"^> ROLE: \*?%s\*? \(%s\)$" % (re.escape(name), re.escape(str(installed))), text, re.M)
        assert header, "%s: not rendered from %s" % (name, installed)
        section = text[header.end():].split("\n> ROLE: ", 1)[0]
        for entry, spec in specs["argument_specs"].items():
            assert re.search(r"ENTRY POINT: \*?%s\*? - %s" % (entry, re.escape(spec["short_description"])), section)
            missing = [opt for opt in spec.get("options") or {} if not re.search(r"^[ =-]*%s\s" % opt, section, re.M)]
            assert missing == [], "%s: options not listed: %s" % (name, missing)


def test_filters_documented_from_the_installed_collection(built):
    documented = [Path(n).stem for n in members(built, r"plugins/filter/\w+\.ya?ml")]
    if not documented:
        pytest.skip("no documented filter plugins")
    names = ["netstack.tuning.%s" % f for f in documented]
    docs = json.loads(doc(built, "-t", "filter", "-j", *names))
    for name in names:
        assert docs[name]["doc"]["short_description"], name
    listed = doc(built, "-t", "filter", "-l", "netstack.tuning")
    for name in names:
        assert re.search(r"^%s\s" % re.escape(name), listed, re.M), name


RENDER = """
import sys
from ansible_collections.netstack.tuning.plugins.module_utils.report import site
from ansible_collections.netstack.tuning.plugins.module_utils.traffic import report as traffic
from ansible_collections.netstack.tuning.plugins.module_utils.zerocopy import report as zerocopy
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import study
t = "<script>alert(1)</script>"
pages = [site.html({t: {}}, title=t), traffic.html({}, title=t), zerocopy.html({t: {"failed": True}}, title=t),
         study.render_report({"importances": {}}, t)]
assert all("<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>" in p and "<script>" not in p for p in pages)
print(sys.modules[site.__name__].__file__)
"""


def test_reports_render_from_the_installed_collection(built):
    """The four HTML reports' templates (Python modules of report/templates/) come with the
    collection: each page renders, autoescaped, from the installed copy alone."""
    installed = built["clean"] / "ansible_collections" / "netstack" / "tuning"
    out = run([BIN / "python", "-c", "import sys; sys.path.insert(0, %r)\n%s" % (str(built["clean"]), RENDER)],
              env=built["env"], cwd=built["cwd"])
    assert out.strip().startswith(str(installed)), out
