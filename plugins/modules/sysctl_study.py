#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstack.tuning contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sysctl_study
short_description: Tune sysctls for nginx latency with Optuna, verified against defaults and tuned
version_added: 0.1.0
description:
  - An action plugin - the study loop runs on the controller. Each trial asks Optuna for a
    parameter set from the search space, runs M(netstack.tuning.sysctl_trial) on the host
    (apply commit-confirmed through the journal, benchmark nginx with wrk, revert) and tells
    Optuna the median p99 over the repeats.
  - Constraints - zero errors, and throughput at least O(min_rps_ratio) of the baseline.
    A trial whose first run is worse than O(prune_factor) times the baseline p99 is pruned.
  - The winner is re-measured in O(verify_rounds) interleaved rounds against the kernel
    defaults and the sysctls of tuned's network-latency profile, and accepted only if a
    one-sided Mann-Whitney U test finds its p99 lower than the defaults' (p < O(alpha)).
  - Storage is an SQLite file by default or any SQLAlchemy URL (PostgreSQL), so many hosts
    of one hardware class can share one study; a study of the same name is resumed, and
    trials left running by an interrupted run are marked failed. The storage stays
    readable by optuna-dashboard.
  - With O(client), the study tunes the host itself instead of a lab - each trial applies the set
    on the host with M(netstack.tuning.sysctl_set) (commit-confirmed), runs
    M(netstack.tuning.http_bench) in fleet mode on the client host against O(target_url), and rolls
    the set back through the host's journal (M(netstack.tuning.netstack_journal)). The client is
    reached as a task delegated to it would be (its connection, user and become settings).
  - One progress line per trial is printed while it runs.
  - Every option is checked before anything runs - before the host is asked, the storage
    file is created or a benchmark starts - and the same way in check mode; an error names
    the option (or C(bench.<key>)).
author:
  - netstack.tuning maintainers (@netstack-tuning)
options:
  space:
    description:
      - Search space, a YAML file (path) or a mapping; defaults to the collection's nginx-latency space.
      - A relative path is looked up in the play's C(files/) search path.
    type: raw
  trials:
    description: Finished trials wanted for this host (a resumed study runs only the rest); 1 to 10000.
    type: int
    default: 20
  sampler:
    description: C(tpe) (multivariate), C(random), C(cmaes), or C(nsga2) for two objectives.
    type: str
    choices: [tpe, random, cmaes, nsga2]
    default: tpe
  objectives:
    description: V([p99]) or V([p99, rps]) (minimise p99, maximise requests/s).
    type: list
    elements: str
    default: [p99]
  storage:
    description:
      - SQLite file path or SQLAlchemy URL (for example C(postgresql+psycopg2://user@host/db)).
      - A path's directory is created when missing; a path under a file, or a directory, is refused.
    type: str
    default: ~/.netstack/studies.db
  study_name:
    description: Name of the study; defaults to C(<space name>-<inventory host>).
    type: str
  seed:
    description: Sampler seed, 0 to 4294967295 (2^32 - 1).
    type: int
  scenario:
    description:
      - A tuning scenario, by name (one of the collection's, such as C(wan-lossy-keepalive); see docs/tuning.md)
        or as the path of a scenario file. It gives the lab's network path (delay, loss, bottleneck), nginx and the
        wrk load, and the search space when O(space) is not given.
      - Keys of the space that this host's kernel lacks are left out and listed in RV(skipped_keys).
    type: str
  warm_start:
    description:
      - The name of an earlier study in the same O(storage) (hosts of the same hardware class, the same scenario);
        its three best feasible trials, with the parameters this space has, are the first trials of this study.
      - Only for a study that has no finished trial of this host yet.
    type: str
  bench:
    description:
      - Benchmark settings passed to M(netstack.tuning.sysctl_trial) (its O(netstack.tuning.sysctl_trial#module:bench) keys),
        checked as that module checks them, before the study starts. With O(scenario), they override its settings.
    type: dict
    default: {}
  confirm_timeout:
    description: Seconds after which the host reverts a trial by itself; 1 to 604800 (a week).
    type: int
    default: 300
  verify_rounds:
    description: Interleaved verification rounds (each arm measured once per round); 3 to 1000.
    type: int
    default: 5
  compare_tuned:
    description: Include tuned's network-latency sysctls as a third arm in verification.
    type: bool
    default: true
  min_rps_ratio:
    description: Throughput floor as a fraction of the baseline, 0 to 1 (0 - no floor).
    type: float
    default: 0.95
  prune_factor:
    description: Prune a trial whose first run's p99 exceeds this multiple of the baseline p99; 0 disables. At most 1000.
    type: float
    default: 2.0
  halving:
    description:
      - Successive halving (multi-fidelity) - every trial's first benchmark run is a short
        measurement, and only a trial whose first-run p99 is among the best 1/O(halving) of the
        first runs so far gets its remaining runs (C(bench.repeats)); the others are pruned, and
        the sampler still learns from their first run.
      - V(0) turns it off; 2 to 10. Saves time only with C(bench.repeats) of 2 or more.
    type: int
    default: 0
  client:
    description:
      - Inventory host that runs the load (wrk) against this host's own server, turning the study
        into a remote-client study of the host itself; see the description.
      - Refused with O(scenario) and with the lab's C(bench) keys (C(nginx_mode), C(payload_bytes),
        C(worker_processes), C(listen_backlog), C(path)).
    type: str
  target_url:
    description:
      - URL the client requests, with O(client). Defaults to C(http://<ansible_host>/) of this host.
      - Settings that only act when a socket is created (the listen backlog) reach the server's
        listening socket only when it re-listens; restart the server around the study for those.
    type: str
  client_state_dir:
    description:
      - Journal directory on the O(client) host, for O(tune_client); defaults to O(state_dir).
      - Variables in the task are those of the tuned host, so give the client's own path where
        it differs (for example C("{{ hostvars[client].netstack_state_dir }}")).
    type: path
  tune_client:
    description:
      - Apply each trial's set on the client side too, since loss recovery of the requests and the
        connect side of a handshake are the client kernel's. With O(client), on the client host
        (commit-confirmed and rolled back the same way); in the lab, the per-namespace keys in
        wrk's namespace (M(netstack.tuning.sysctl_trial)'s O(netstack.tuning.sysctl_trial#module:tune_client)).
    type: bool
    default: false
  alpha:
    description: Significance level of the verification test; above 0, at most 0.5.
    type: float
    default: 0.05
  report:
    description:
      - Path on the controller of an HTML report with plots, written at the end of the study.
      - Checked at the start - a directory, or a path under a file, is refused before anything runs.
    type: path
extends_documentation_fragment:
  - netstack.tuning.state_dir
attributes:
  check_mode:
    description: Validates every option and the space and inspects the host (read-only); measures nothing, creates no storage.
    support: full
  diff_mode:
    description: No diff; the study changes nothing lasting on the host.
    support: none
  action:
    description: Runs on the controller as an action plugin.
    support: full
seealso:
  - module: netstack.tuning.sysctl_trial
"""

EXAMPLES = r"""
- name: Tune this host for nginx p99
  netstack.tuning.sysctl_study:
    trials: 30
    bench: {duration: 10, repeats: 3, connections: 32}
    report: reports/{{ inventory_hostname }}-study.html
  register: study

- name: Tune a web server with the load coming from another host (remote-client mode)
  netstack.tuning.sysctl_study:
    client: loadgen1
    target_url: "http://{{ ansible_host }}/index.html"
    space: nginx_latency.yml
    trials: 40
    halving: 3
    bench: {duration: 10, repeats: 3, connections: 64, keepalive: false}

- name: A study shared by every host of one hardware class (PostgreSQL)
  netstack.tuning.sysctl_study:
    storage: postgresql+psycopg2://optuna@db.example/optuna
    study_name: nginx-latency-r6i
    trials: 10
"""

RETURN = r"""
skipped_keys:
  description: Parameters of the space left out because this host's kernel lacks their sysctl.
  returned: always
  type: list
  elements: str
scenario:
  description: The scenario's C(name), C(version) and C(weakness), when O(scenario) was given.
  returned: when scenario is given
  type: dict
accepted:
  description: Whether the winner beat the defaults with confidence (and kept throughput, zero errors).
  returned: always
  type: bool
reason:
  description: Why it was (not) accepted.
  returned: always
  type: str
best:
  description: Winning trial (C(trial), C(params), C(sysctls), C(metrics)).
  returned: when a trial met the constraints
  type: dict
baseline:
  description: Kernel-default metrics measured before the trials.
  returned: always
  type: dict
verification:
  description: Per-arm spreads and the statistical comparisons (test, p-value, ratio and its 95% CI).
  returned: when a winner exists
  type: dict
importances:
  description: Parameter importances.
  returned: always
  type: dict
history:
  description: Trial number, state, p99, rps, feasibility.
  returned: always
  type: list
  elements: dict
report:
  description: Path of the HTML report.
  returned: when report is set
  type: str
pruned:
  description: Trials of this host pruned after their first run (O(prune_factor) or O(halving)).
  returned: always
  type: int
tune_client:
  description: Whether the trials changed the client side too (O(tune_client)).
  returned: always
  type: bool
client:
  description: The client host, with O(client).
  returned: with client
  type: str
target_url:
  description: The URL the client requested, with O(client).
  returned: with client
  type: str
"""
