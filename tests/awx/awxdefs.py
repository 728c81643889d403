"""The AWX job templates of awx/job_templates.yml, as AWX would launch them.

For each template: the playbook path, the survey, and the extra vars a launch that
accepts every survey default gets: the template's extra_vars overlaid by the survey
defaults, typed the way AWX types answers (integer -> int, float -> float, multiselect ->
list of the selected choices, from the newline-separated default AWX stores).

    import awxdefs
    for t in awxdefs.load_templates():
        run(t.playbook, extravars=t.launch_vars)

Plain Python + PyYAML + jsonschema; no AWX needed.
"""
import json
import keyword
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
AWX_DIR = REPO / "awx"
TEMPLATES_FILE = AWX_DIR / "job_templates.yml"
SCHEMA_FILE = AWX_DIR / "survey.schema.json"

CHOICE_TYPES = ("multiplechoice", "multiselect")


@dataclass
class JobTemplate:
    name: str
    playbook: Path                   # absolute
    playbook_rel: str                # as written in job_templates.yml (relative to the project)
    survey_file: Path
    survey: dict
    extra_vars: dict                 # the template's own
    settings: dict = field(default_factory=dict)   # every key of the entry, as written

    @property
    def survey_defaults(self):
        return survey_defaults(self.survey)

    @property
    def launch_vars(self):
        """Template extra_vars overlaid by the survey defaults (what AWX sends)."""
        merged = dict(self.extra_vars)
        merged.update(self.survey_defaults)
        return merged


def split_choices(choices):
    """AWX takes choices as a list or a newline-separated string."""
    if isinstance(choices, str):
        return [c for c in choices.splitlines() if c.strip()]
    return list(choices or [])


def typed_default(question):
    """A question's default as AWX passes it to the playbook; None when it passes nothing."""
    default = question.get("default")
    kind = question["type"]
    if default is None:
        return None
    if kind == "integer":
        return None if default == "" else int(default)
    if kind == "float":
        return None if default == "" else float(default)
    if kind == "multiselect":
        return split_choices(default) if isinstance(default, str) else list(default)
    return default


def survey_defaults(survey):
    out = {}
    for question in survey.get("spec", []):
        value = typed_default(question)
        if value is not None:
            out[question["variable"]] = value
    return out


def load_schema():
    return json.loads(SCHEMA_FILE.read_text())


def validate_survey(survey, schema=None):
    """Every problem with a survey, as readable strings; [] when it is valid.

    The JSON Schema checks the shape; the rest are checks across fields."""
    import jsonschema

    schema = schema if schema is not None else load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(root)", e.message)
              for e in sorted(validator.iter_errors(survey), key=lambda e: list(e.absolute_path))]
    if errors:
        return errors
    seen = set()
    for i, q in enumerate(survey["spec"]):
        where = "spec/%d (%s)" % (i, q["variable"])
        var, kind = q["variable"], q["type"]
        if var in seen:
            errors.append("%s: variable defined twice" % where)
        seen.add(var)
        if keyword.iskeyword(var) or var.startswith("ansible_"):
            errors.append("%s: reserved variable name" % where)
        default = q.get("default")
        lo, hi = q.get("min"), q.get("max")
        if kind in CHOICE_TYPES:
            choices = split_choices(q["choices"])
            picked = split_choices(default) if kind == "multiselect" else ([default] if default else [])
            for value in picked:
                if value not in choices:
                    errors.append("%s: default %r is not among the choices %s" % (where, value, choices))
            if q["required"] and not picked:
                errors.append("%s: required, but no default choice" % where)
        elif kind in ("integer", "float"):
            if lo is not None and hi is not None and lo > hi:
                errors.append("%s: min %s > max %s" % (where, lo, hi))
            if default not in (None, ""):
                if lo is not None and default < lo or hi is not None and default > hi:
                    errors.append("%s: default %s outside [%s, %s]" % (where, default, lo, hi))
            elif q["required"]:
                errors.append("%s: required, but no default" % where)
        else:  # text, textarea, password: min/max are lengths
            if default is not None:
                if lo is not None and len(default) < lo or hi is not None and len(default) > hi:
                    errors.append("%s: default length %d outside [%s, %s]" % (where, len(default), lo, hi))
            if q["required"] and not default:
                errors.append("%s: required, but no default" % where)
    return errors


def load_templates(path=TEMPLATES_FILE, project_root=REPO):
    """Every job template of awx/job_templates.yml, in file order."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    out = []
    for entry in data["awx_job_templates"]:
        survey_file = path.parent / entry["survey"]
        out.append(JobTemplate(
            name=entry["name"],
            playbook=Path(project_root) / entry["playbook"],
            playbook_rel=entry["playbook"],
            survey_file=survey_file,
            survey=json.loads(survey_file.read_text()),
            extra_vars=dict(entry.get("extra_vars") or {}),
            settings=dict(entry),
        ))
    return out


def by_name(name, **kw):
    for t in load_templates(**kw):
        if t.name == name:
            return t
    raise KeyError(name)
