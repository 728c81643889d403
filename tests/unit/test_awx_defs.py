"""AWX job templates and surveys as code (awx/): they load, they are valid AWX surveys,
every survey variable is one the playbook really reads, configure.yml parses, and the
execution environment's build context carries our requirements. No AWX, no network."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "awx"))
import awxdefs  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
TEMPLATES = awxdefs.load_templates()
IDS = [t.name.split(": ", 1)[-1] for t in TEMPLATES]
ENV = {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "PATH": "%s:/usr/bin:/bin" % VENV_BIN, "HOME": "/root",
       "LANG": "C.UTF-8"}


def tool(name):
    path = VENV_BIN / name
    if not path.exists():
        pytest.skip("%s is not installed in .venv (make setup)" % name)
    return str(path)


def arg_options():
    """Every role's argument_specs options, by variable name."""
    out = {}
    for spec in REPO.glob("roles/*/meta/argument_specs.yml"):
        for entry in (yaml.safe_load(spec.read_text())["argument_specs"] or {}).values():
            out.update(entry.get("options") or {})
    return out


def playbook_text(path, seen=None, base=None):
    """The playbook without its comments, the playbooks and task files it imports or
    includes, and the argument_specs and defaults of every role it names: where a variable
    it reads must appear."""
    seen = set() if seen is None else seen
    base = base or path.parent
    if path in seen or not path.is_file():
        return ""
    seen.add(path)
    text = "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    for ref in re.findall(r"(?:import|include)_(?:playbook|tasks):\s*[\"']?([^\s\"'{}]+)", text):
        for candidate in (path.parent / ref, base / ref):
            text += "\n" + playbook_text(candidate.resolve(), seen, base)
    for role in sorted(p.name for p in (REPO / "roles").iterdir()):
        if re.search(r"(?<![\w.])(netstack\.tuning\.)?%s\b" % role, text):
            for part in ("meta/argument_specs.yml", "defaults/main.yml"):
                f = REPO / "roles" / role / part
                text += f.read_text() if f.exists() else ""
    return text


# --- the list of templates ---------------------------------------------------------------

def test_templates_listed_once_with_their_keys():
    names = [t.name for t in TEMPLATES]
    assert len(names) == len(set(names)) and len(names) >= 6
    for t in TEMPLATES:
        assert t.name.startswith("netstack: ")
        for key in ("description", "playbook", "survey", "extra_vars", "ask_limit_on_launch", "verbosity",
                    "become_enabled", "forks"):
            assert key in t.settings, "%s: %s missing" % (t.name, key)
        assert isinstance(t.extra_vars, dict)
        assert t.survey["name"] == t.name, "survey name differs from its template's"


@pytest.mark.parametrize("template", TEMPLATES, ids=IDS)
def test_playbook_exists(template):
    assert template.playbook.is_file(), "%s: %s does not exist" % (template.name, template.playbook_rel)


# --- the surveys -------------------------------------------------------------------------

@pytest.mark.parametrize("template", TEMPLATES, ids=IDS)
def test_survey_is_valid(template):
    assert awxdefs.validate_survey(template.survey) == []


@pytest.mark.parametrize("template", TEMPLATES, ids=IDS)
def test_survey_variables_are_read_by_the_playbook(template):
    if not template.playbook.exists():
        pytest.fail("%s does not exist yet" % template.playbook_rel)
    text = playbook_text(template.playbook.resolve())
    unread = [q["variable"] for q in template.survey["spec"]
              if not re.search(r"\b%s\b" % re.escape(q["variable"]), text)]
    assert unread == [], "%s: the playbook and its roles never mention %s" % (template.name, unread)


@pytest.mark.parametrize("template", TEMPLATES, ids=IDS)
def test_survey_agrees_with_role_argument_specs(template):
    """A question on a role variable offers only what the role accepts, with its type."""
    options = arg_options()
    kinds = {"integer": {"int"}, "float": {"float", "raw"}, "multiplechoice": {"str"},
             "multiselect": {"list"}, "text": {"str", "path", "raw"}, "textarea": {"str", "raw"},
             "password": {"str"}}
    for q in template.survey["spec"]:
        opt = options.get(q["variable"])
        if opt is None:
            continue  # a playbook variable, not a role's
        assert opt.get("type", "str") in kinds[q["type"]], "%s: %s is %s in the role" % (
            template.name, q["variable"], opt.get("type"))
        allowed = opt.get("choices")
        if allowed:
            extra = set(awxdefs.split_choices(q["choices"])) - set(allowed)
            assert not extra, "%s: %s offers %s the role refuses" % (template.name, q["variable"], extra)


BAD = [
    ({"variable": "a b"}, "does not match"),
    ({"type": "number"}, "is not one of"),
    ({"type": "multiplechoice", "default": "x"}, "'choices' is a required property"),
    ({"type": "multiplechoice", "choices": ["a", "b"], "default": "c"}, "not among the choices"),
    ({"type": "multiselect", "choices": ["a", "b"], "default": "a\nz"}, "not among the choices"),
    ({"type": "integer", "default": 9, "min": 1, "max": 5}, "outside"),
    ({"type": "integer", "default": "3"}, "is not of type 'integer'"),
    ({"type": "float", "default": 0.5, "min": 1, "max": 5}, "outside"),
    ({"type": "text", "default": "", "required": True}, "required, but no default"),
    ({"type": "text", "choices": ["a"]}, "should not be valid"),
    ({"variable": "ansible_become"}, "reserved"),
    ({"surprise": 1}, "Additional properties"),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m for _, m in BAD])
def test_validator_refuses_bad_surveys(change, message):
    question = {"question_name": "Q", "variable": "v", "type": "text", "required": False, "default": "d"}
    question.update(change)
    errors = awxdefs.validate_survey({"name": "n", "description": "", "spec": [question]})
    assert any(message in e for e in errors), errors


def test_validator_refuses_duplicate_variables():
    q = {"question_name": "Q", "variable": "v", "type": "text", "required": False, "default": ""}
    errors = awxdefs.validate_survey({"name": "n", "description": "", "spec": [q, dict(q)]})
    assert errors == ["spec/1 (v): variable defined twice"]


# --- the loader: what a launch with every default sends -----------------------------------

def test_launch_vars_are_typed_like_awx():
    tune = awxdefs.by_name("netstack: tune").launch_vars
    assert tune["sysctl_tuner_trials"] == 8 and type(tune["sysctl_tuner_trials"]) is int
    assert tune["tune_gate_factor"] == 3.0 and type(tune["tune_gate_factor"]) is float
    assert tune["sysctl_tuner_sampler"] == "tpe"
    # Not fixed by the template: AWX extra vars outrank the inventory, which may relax it
    # (the lab's does); the role's own default (true) holds elsewhere.
    assert "sysctl_tuner_require_accepted" not in tune
    assert tune["tune_canary"] == ""                              # AWX passes an empty default
    assert "tune_serial" not in tune
    assert awxdefs.by_name("netstack: zerocopy").launch_vars["zerocopy_check_sizes"] == ["4K", "64K"]
    # no default selection: the inventory's netstack_capabilities decide per host
    assert awxdefs.by_name("netstack: site").launch_vars["site_capabilities"] == []
    for t in TEMPLATES:
        assert t.launch_vars[t.survey["spec"][0]["variable"]] == "all"


def test_survey_defaults_override_template_extra_vars(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"name": "x", "description": "", "spec": [
        {"question_name": "n", "variable": "n", "type": "integer", "required": True, "default": 4},
        {"question_name": "m", "variable": "m", "type": "multiselect", "required": False, "default": "",
         "choices": ["a", "b"]},
        {"question_name": "p", "variable": "p", "type": "text", "required": False}]}))
    (tmp_path / "t.yml").write_text(yaml.safe_dump({"awx_job_templates": [
        {"name": "x", "playbook": "pb.yml", "survey": "s.json", "extra_vars": {"n": 1, "k": "keep"}}]}))
    (t,) = awxdefs.load_templates(tmp_path / "t.yml", project_root=tmp_path)
    assert t.playbook == tmp_path / "pb.yml"
    assert t.launch_vars == {"n": 4, "k": "keep", "m": []}      # no default: nothing is sent for p


# --- configure.yml and the execution environment -----------------------------------------

def test_configure_playbook_syntax():
    run = subprocess.run([tool("ansible-playbook"), "--syntax-check", "awx/configure.yml"], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def requirement_lines(path):
    return [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()
            if ln.split("#", 1)[0].strip()]


def test_execution_environment_context(tmp_path):
    ctx = tmp_path / "ctx"
    run = subprocess.run([tool("ansible-builder"), "create", "-f", "execution-environment.yml", "-c", str(ctx)],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    build = ctx / "_build"
    context_reqs = requirement_lines(build / "requirements.txt")
    for line in requirement_lines(REPO / "requirements.txt"):
        assert line in context_reqs
    assert (build / "bindep.txt").read_text() == (REPO / "bindep.txt").read_text()
    galaxy = yaml.safe_load((build / "requirements.yml").read_text())
    assert {"ansible.posix", "community.general"} <= {c["name"] for c in galaxy["collections"]}
    # the collection itself is baked in, without tests or benchmarks
    baked = build / "netstack_tuning"
    assert (baked / "galaxy.yml").is_file() and (baked / "plugins" / "modules" / "sysctl_set.py").is_file()
    assert (baked / "roles" / "sysctl_tuner" / "meta" / "argument_specs.yml").is_file()
    assert not (baked / "tests").exists() and not (baked / "benchmarks").exists()
    (containerfile,) = [p for p in (ctx / "Containerfile", ctx / "Dockerfile") if p.exists()]
    text = containerfile.read_text()
    core = [ln for ln in requirement_lines(REPO / "requirements.txt") if ln.startswith("ansible-core")][0]
    assert 'ANSIBLE_INSTALL_REFS="%s ' % core in text              # the same ansible-core pin
    for needle in ("introspect.py introspect --user-pip=requirements.txt --user-bindep=bindep.txt",
                   "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml",
                   "ansible-galaxy collection install /tmp/netstack_tuning", "install-from-bindep"):
        assert needle in text


def test_variable_check_can_fail():
    """The check above is a grep: make sure it is not one that finds everything."""
    text = playbook_text((REPO / "playbooks" / "tune.yml").resolve())
    assert re.search(r"\bsysctl_tuner_trials\b", text) and re.search(r"\btune_gate_factor\b", text)
    assert not re.search(r"\btune_no_such_variable\b", text)
    assert "Extra vars:" not in text                                # comments are not counted
