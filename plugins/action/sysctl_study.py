# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin: the Optuna study loop runs here, on the controller.

Lab mode (the default): each trial runs the sysctl_trial module on the host, which
applies the set commit-confirmed, benchmarks its own nginx over its own lab, and reverts.

Remote-client mode (``client``): the study tunes the host itself.  Each trial applies the
set on the host with sysctl_set (commit-confirmed: the host's watchdog reverts it if the
controller goes away), runs http_bench in fleet mode on the client inventory host against
the host's server, and rolls the set back through the host's journal."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.executor.task_executor import TaskExecutor
from ansible.playbook.task import Task
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.errors import UnsupportedError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.netstack.tuning.plugins.module_utils.core.common import NetstackError, check_path_options
from ansible_collections.netstack.tuning.plugins.module_utils.core.frontend import guard_ints, oversized_int
from ansible_collections.netstack.tuning.plugins.module_utils.tuning import httpbench, scenario, searchspace, study, trial

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
    halving=dict(type="int", default=0),
    client=dict(type="str"),
    target_url=dict(type="str"),
    tune_client=dict(type="bool", default=False),
    client_state_dir=dict(type="path"),
)

# bench keys that describe the lab (its nginx and path); with a remote client the server
# and the network are the real ones, so these have no meaning there
LAB_ONLY_BENCH = ("nginx_mode", "payload_bytes", "worker_processes", "listen_backlog", "path")


def check_options(p):
    """Every option but the space, before anything is read, asked of the host or created
    (the storage file): the study's numbers (study.check_options), confirm_timeout and the
    bench settings as sysctl_trial checks them (trial.validate), the objectives.  The same
    in check mode as in real mode.  NetstackError naming the option."""
    study.check_options(p["trials"], p["seed"], p["verify_rounds"], p["min_rps_ratio"], p["prune_factor"],
                        p["alpha"], p["halving"])
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
    if p.get("client_state_dir"):
        check_path_options(p, ["client_state_dir"])
    check_path_options(p, ["storage", "report"], absolute=False)
    if isinstance(p.get("space"), str):
        check_path_options(p, ["space"], absolute=False)
    if p.get("scenario"):
        check_path_options(p, ["scenario"], absolute=False)


def check_remote(p, host, address, in_inventory):
    """The remote-client options (``client``, ``target_url``, ``tune_client``) against the
    rest; returns the URL the client requests, or None in lab mode.  ``address`` is the
    tuned host's address (ansible_host), ``in_inventory(name)`` says whether a host exists.
    NetstackError naming the option."""
    if not p["client"]:
        if p["client_state_dir"]:
            raise NetstackError("only with client", field="client_state_dir")
        if p["target_url"]:
            raise NetstackError("only with client (a remote-client study; the lab serves its own URL)",
                                field="target_url")
        return None
    client = p["client"]
    if client == host:
        raise NetstackError("must be another inventory host than the one tuned (%s)" % host, field="client")
    if not in_inventory(client):
        raise NetstackError("%r is not an inventory host" % client[:200], field="client")
    if p["scenario"]:
        raise NetstackError("a scenario describes a lab path and server; with a client the study measures the "
                            "host's own server over the real network", field="scenario")
    bench = p["bench"] or {}
    lab_keys = [k for k in LAB_ONLY_BENCH if k in bench and bench[k] != trial.BENCH_DEFAULTS[k]]
    if lab_keys:
        raise NetstackError("lab mode only: with a client the server and the network are the host's own",
                            field="bench.%s" % lab_keys[0])
    url = p["target_url"] or "http://%s/" % ("[%s]" % address if ":" in address else address)
    return httpbench.check_url(url)


def failed(result):
    """A task result that failed or could not reach its host."""
    return bool(result.get("failed") or result.get("unreachable"))


class RemoteTrial(object):
    """One trial of a remote-client study, as run_study's ``run_trial``: apply the set on
    the tuned host (and the client with ``tune_client``) commit-confirmed, run wrk on the
    client against ``url`` (the first run alone when a prune limit is given, so a bad set
    costs one run), roll back.  ``run_on(host, module, args)`` runs a module there."""

    def __init__(self, run_on, host, client, url, p, study_name):
        self.run_on, self.host, self.client, self.url = run_on, host, client, url
        self.bench, self.p = p["bench"], p
        self.reason = "tuning trial (study %s)" % study_name
        self.tune = [host] + ([client] if p["tune_client"] else [])
        # each host's own journal: the client's may live elsewhere (client_state_dir)
        self.state_dir = {host: p["state_dir"], client: p["client_state_dir"] or p["state_dir"]}

    def __call__(self, sysctls, prune, repeats):
        applied = []
        try:
            for where in self.tune if sysctls else []:
                r = self.run_on(where, "netstack.tuning.sysctl_set", {
                    "sysctls": sysctls, "confirm_timeout": self.p["confirm_timeout"],
                    "state_dir": self.state_dir[where], "reason": self.reason})
                if failed(r):
                    return {"ok": False, "error": "sysctl_set on %s: %s" % (where, r.get("msg"))}
                if r.get("journal_id"):
                    applied.append((where, r["journal_id"]))
            n = repeats or self.bench["repeats"]
            first = 1 if prune and n > 1 else n
            runs, err = self._wrk(first, self.bench["warmup"])
            if err:
                return {"ok": False, "error": err}
            pruned = bool(prune) and runs[0]["latency_us"]["p99"] / 1000.0 > prune
            if not pruned and len(runs) < n:
                more, err = self._wrk(n - len(runs), 0)
                if err:
                    return {"ok": False, "error": err}
                runs += more
            return {"ok": True, "pruned": pruned, "metrics": trial.metrics_of(runs),
                    "applied": [{"host": h, "journal_id": j} for h, j in applied]}
        finally:
            for where, jid in reversed(applied):
                r = self.run_on(where, "netstack.tuning.netstack_journal", {
                    "action": "rollback", "journal_id": jid, "state_dir": self.state_dir[where]})
                if failed(r):
                    # the host's watchdog still reverts it at the confirm deadline
                    display.warning("rollback of %s on %s failed (its watchdog reverts it within %d s): %s"
                                    % (jid, where, self.p["confirm_timeout"], r.get("msg")))

    def _wrk(self, repeats, warmup):
        b = self.bench
        r = self.run_on(self.client, "netstack.tuning.http_bench", {
            "mode": "fleet", "target_url": self.url, "connections": b["connections"], "threads": b["threads"],
            "duration": b["duration"], "timeout": b["timeout"], "keepalive": b["keepalive"],
            "warmup": warmup, "repeats": repeats})
        if failed(r):
            return None, "http_bench on %s: %s" % (self.client, r.get("msg"))
        if any(run["latency_us"].get("p99") is None for run in r["runs"]):
            return None, "a benchmark run completed no request (errors: %s)" % [run["errors"] for run in r["runs"]]
        return list(r["runs"]), None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def _module(self, args, task_vars):
        return self._execute_module(module_name="netstack.tuning.sysctl_trial", module_args=args,
                                    task_vars=task_vars)

    def _run_on(self, where, module, args, task_vars):
        """Run ``module`` on inventory host ``where`` exactly as a task delegated there
        would run (its connection, user, become and variables): Ansible's own task executor
        with ``delegate_to``, from inside this action."""
        if where == task_vars.get("inventory_hostname"):
            return self._execute_module(module_name=module, module_args=args, task_vars=task_vars)
        hostvars = task_vars["hostvars"]
        task = Task.load({module: args, "delegate_to": where}, block=self._task._parent, role=self._task._role,
                         variable_manager=hostvars._variable_manager, loader=self._loader)
        host = hostvars._inventory.get_host(task_vars["inventory_hostname"])
        return TaskExecutor(host, task, task_vars, self._play_context, self._loader, self._shared_loader_obj,
                            None, hostvars._variable_manager).run()

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        p = self._validated_args()
        host = task_vars.get("inventory_hostname", "")
        try:
            check_paths(p)
            hostvars = task_vars.get("hostvars") or {}
            url = check_remote(p, host, str(task_vars.get("ansible_host") or host), lambda h: h in hostvars)
            sc = self._load_scenario(p["scenario"]) if p["scenario"] else None
            if sc:
                # the scenario's path, nginx and load; keys given in bench override them
                p["bench"] = scenario.bench(sc, **p["bench"])
                result["scenario"] = {"name": sc["name"], "version": sc["version"], "weakness": sc["weakness"]}
            check_options(p)
            space = self._load_space(p["space"] if p["space"] is not None or not sc else sc["space"])
            keys = sorted({q["sysctl"] for q in space["parameters"]} | set(study.TUNED_NETWORK_LATENCY))
            # a lab trial starts from a fresh namespace's values; a remote-client study from
            # the host's own (live)
            insp = self._module({"action": "inspect", "keys": keys, "live": bool(url)}, task_vars)
            if insp.get("failed"):
                raise NetstackError("cannot inspect the host: %s" % insp.get("msg"), field="space")
            if url and p["tune_client"]:
                cl = self._run_on(p["client"], "netstack.tuning.sysctl_trial",
                                  {"action": "inspect", "keys": keys, "live": True}, task_vars)
                if failed(cl):
                    raise NetstackError("cannot inspect %s: %s" % (p["client"], cl.get("msg")), field="client")
                insp["missing"] = sorted(set(insp["missing"]) | set(cl["missing"]))
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

            def lab_trial(sysctls, prune, repeats):
                args = {"sysctls": sysctls, "bench": p["bench"], "confirm_timeout": p["confirm_timeout"],
                        "state_dir": p["state_dir"]}
                if prune:
                    args["prune_p99_above"] = prune
                if repeats:
                    args["repeats"] = repeats
                if p["tune_client"]:
                    args["tune_client"] = True
                r = self._module(args, task_vars)
                if r.get("failed"):
                    return {"ok": False, "error": r.get("msg")}
                return r

            if url:
                run_trial = RemoteTrial(lambda where, module, args: self._run_on(where, module, args, task_vars),
                                        host, p["client"], url, dict(p, bench=trial.validate_bench(p["bench"])), name)
                display.display("[%s] remote client %s requests %s; trials change %s" % (
                    host, p["client"], url, " and ".join(run_trial.tune)))
            else:
                run_trial = lab_trial
            res = study.run_study(
                space, run_trial, p["trials"], os.path.expanduser(p["storage"]), name, insp["current"],
                sampler=p["sampler"], objectives=tuple(p["objectives"]), seed=p["seed"], host=host,
                log=lambda msg: display.display("[%s] %s" % (host, msg)), verify_rounds=p["verify_rounds"],
                tuned_sysctls=tuned if p["compare_tuned"] else None, min_rps_ratio=p["min_rps_ratio"],
                prune_factor=p["prune_factor"], alpha=p["alpha"], warm_start=p["warm_start"], halving=p["halving"],
                baseline="%s's current settings" % host if url else "kernel defaults")
            res["scopes"], res["tune_client"] = insp["scopes"], p["tune_client"]
            if url:
                res["client"], res["target_url"] = p["client"], url
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
