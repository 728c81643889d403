# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: the Optuna study loop runs here, on the controller; each trial runs the
sysctl_trial module on the host (apply commit-confirmed, benchmark, revert)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.errors import UnsupportedError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.netstack.tuning.plugins.module_utils.common import NetstackError, check_path_options
from ansible_collections.netstack.tuning.plugins.module_utils.frontend import guard_ints, oversized_int
from ansible_collections.netstack.tuning.plugins.module_utils import scenario, searchspace, study, trial

display = Display()
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SPACE = os.path.join(COLLECTION_ROOT, "roles", "sysctl_tuner", "files", "spaces", "nginx_latency.yml")

ARGS = dict(
    space=dict(type="raw"),
    scenario=dict(type="str"),
    trials=dict(type="int", default=20),
    sampler=dict(type="str", default="tpe", choices=list(study.SAMPLERS)),
    objectives=dict(type="list", elements="str", default=["p99"]),
    storage=dict(type="str", default="~/.netstack/studies.db"),
    study_name=dict(type="str"),
    seed=dict(type="int"),
    bench=dict(type="dict", default={}),
    confirm_timeout=dict(type="int", default=300),
    state_dir=dict(type="path", default="/var/lib/netstack"),
    verify_rounds=dict(type="int", default=5),
    compare_tuned=dict(type="bool", default=True),
    min_rps_ratio=dict(type="float", default=0.95),
    prune_factor=dict(type="float", default=2.0),
    alpha=dict(type="float", default=0.05),
    report=dict(type="path"),
    warm_start=dict(type="str"),
)


def check_options(p):
    """Every option but the space, before anything is read, asked of the host or created
    (the storage file): the study's numbers (study.check_options), confirm_timeout and the
    bench settings as sysctl_trial checks them (trial.validate), the objectives.  The same
    in check mode as in real mode.  NetstackError naming the option."""
    study.check_options(p["trials"], p["seed"], p["verify_rounds"], p["min_rps_ratio"], p["prune_factor"],
                        p["alpha"])
    trial.validate({}, p["bench"], p["confirm_timeout"])
    study.check_storage(p["storage"])
    if set(p["objectives"]) - {"p99", "rps"} or not p["objectives"] or p["objectives"][0] != "p99":
        raise NetstackError("must be [p99] or [p99, rps]", field="objectives")
    if p["report"]:
        check_file_target(os.path.expanduser(p["report"]), "report")


def check_file_target(path, field):
    """A file the study writes at its end, checked read-only at its start: not a
    directory, and its directory a directory or creatable (nearest existing ancestor a
    directory).  NetstackError naming ``field``."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise NetstackError("%s is a directory: give the path of a file" % path, field=field)
    d = os.path.dirname(path)
    while not os.path.lexists(d):
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise NetstackError("%s is not a directory: cannot hold %s" % (d, path), field=field)


def check_paths(p):
    """NUL bytes and control characters in path options (and the storage URL): an error
    naming the option, before anything is read or the host is asked."""
    check_path_options(p, ["state_dir"])
    check_path_options(p, ["storage", "report"], absolute=False)
    if isinstance(p.get("space"), str):
        check_path_options(p, ["space"], absolute=False)
    if p.get("scenario"):
        check_path_options(p, ["scenario"], absolute=False)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def _module(self, args, task_vars):
        return self._execute_module(module_name="netstack.tuning.sysctl_trial", module_args=args,
                                    task_vars=task_vars)

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        p = self._validated_args()
        host = task_vars.get("inventory_hostname", "")
        try:
            check_paths(p)
            sc = self._load_scenario(p["scenario"]) if p["scenario"] else None
            if sc:
                # the scenario's path, nginx and load; keys given in bench override them
                p["bench"] = scenario.bench(sc, **p["bench"])
                result["scenario"] = {"name": sc["name"], "version": sc["version"], "weakness": sc["weakness"]}
            check_options(p)
            space = self._load_space(p["space"] if p["space"] is not None or not sc else sc["space"])
            keys = sorted({q["sysctl"] for q in space["parameters"]} | set(study.TUNED_NETWORK_LATENCY))
            insp = self._module({"action": "inspect", "keys": keys}, task_vars)
            if insp.get("failed"):
                raise NetstackError("cannot inspect the host: %s" % insp.get("msg"), field="space")
            # keys of newer kernels (tcp_rto_min_us: 6.11+) are left out and listed
            space, result["skipped_keys"] = searchspace.available(space, insp["missing"])
            if result["skipped_keys"]:
                display.display("[%s] this kernel lacks %s: left out of the study"
                                % (host, ", ".join(result["skipped_keys"])))
            tuned = {k: v for k, v in study.TUNED_NETWORK_LATENCY.items() if k not in insp["missing"]}
            result["tuned_skipped"] = [k for k in study.TUNED_NETWORK_LATENCY if k in insp["missing"]]
            if self._play_context.check_mode:
                result.update(changed=False, skipped=True, msg="check mode: space valid, nothing measured",
                              space=space["name"], scopes=insp["scopes"])
                return result
            name = p["study_name"] or "%s-%s" % (space["name"], host)

            def run_trial(sysctls, prune, repeats):
                args = {"sysctls": sysctls, "bench": p["bench"], "confirm_timeout": p["confirm_timeout"],
                        "state_dir": p["state_dir"]}
                if prune:
                    args["prune_p99_above"] = prune
                if repeats:
                    args["repeats"] = repeats
                r = self._module(args, task_vars)
                if r.get("failed"):
                    return {"ok": False, "error": r.get("msg")}
                return r

            res = study.run_study(
                space, run_trial, p["trials"], os.path.expanduser(p["storage"]), name, insp["current"],
                sampler=p["sampler"], objectives=tuple(p["objectives"]), seed=p["seed"], host=host,
                log=lambda msg: display.display("[%s] %s" % (host, msg)), verify_rounds=p["verify_rounds"],
                tuned_sysctls=tuned if p["compare_tuned"] else None, min_rps_ratio=p["min_rps_ratio"],
                prune_factor=p["prune_factor"], alpha=p["alpha"], warm_start=p["warm_start"])
            res["scopes"] = insp["scopes"]
            if p["report"]:
                path = os.path.expanduser(p["report"])
                d = os.path.dirname(os.path.abspath(path))
                try:
                    if not os.path.isdir(d):
                        os.makedirs(d)
                    with open(path, "w") as f:
                        f.write(study.render_report(res, "sysctl study %s on %s" % (name, host)))
                except (IOError, OSError) as e:
                    raise NetstackError("cannot write %s: %s" % (path, e.strerror or e), field="report")
                res["report"] = path
        except NetstackError as e:
            raise AnsibleActionFail(str(e), result=dict(field=e.field))
        result.update(res)
        result["changed"] = False
        return result

    def _validated_args(self):
        """validate_argument_spec with the guards NetstackModule gives modules: an integer
        too large for any option (a 400-digit int for a float option was an OverflowError
        traceback) is refused naming the option, and an int option's value that Ansible's
        conversion would choke on (.inf: OverflowError; '1e999999999': a billion-digit int)
        reaches it as text that fails cleanly, naming the option."""
        args = dict(self._task.args)
        for name, value in args.items():
            where = oversized_int(value, name)
            if where:
                raise AnsibleActionFail("%s: integer too large (netstack options take at most 20 digits)" % where,
                                        result=dict(field=where))
        guard_ints(args, ARGS)
        result = ArgumentSpecValidator(ARGS).validate(args)
        try:
            error = result.errors[0]
        except IndexError:
            error = None
        if error:
            msg = result.errors.msg
            if isinstance(error, UnsupportedError):
                msg = "Unsupported parameters for (%s) module: %s" % (self._load_name, msg)
            raise AnsibleActionFail(msg)
        return result.validated_parameters

    def _load_scenario(self, name):
        """A shipped scenario by name (scenario.shipped), else a scenario file (absolute, or
        in the play's files/ search path)."""
        shipped = scenario.shipped()
        if name in shipped:
            return scenario.load(shipped[name])
        path = name
        if not os.path.isabs(path) and not os.path.exists(path):
            try:
                path = self._find_needle("files", name)
            except AnsibleError:
                raise NetstackError("neither a shipped scenario (%s) nor a file" % ", ".join(sorted(shipped)),
                                    field="scenario")
        return scenario.load(path)

    def _load_space(self, space):
        if space is None:
            space = DEFAULT_SPACE
        elif isinstance(space, str) and not os.path.isabs(space) and os.path.exists(
                os.path.join(os.path.dirname(DEFAULT_SPACE), space)) and not os.path.exists(space):
            space = os.path.join(os.path.dirname(DEFAULT_SPACE), space)  # a shipped space by file name
        if isinstance(space, dict):
            return searchspace.load(space)
        if not isinstance(space, str):
            raise NetstackError("a path to a YAML file or a mapping", field="space")
        path = space
        if not os.path.isabs(path) and not os.path.exists(space):
            try:
                path = self._find_needle("files", space)
            except AnsibleError as e:
                raise NetstackError("no such file %r in the play's files/ search path: %s"
                                    % (space[:200], getattr(e, "message", None) or e), field="space")
        try:
            with open(path) as f:
                text = f.read()
        except (IOError, OSError) as e:
            raise NetstackError("cannot read %s: %s" % (path, e), field="space")
        return searchspace.load(text)
