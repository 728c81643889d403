# netstack.tuning — developer entry points. `make demo` and `make test` are the two the
# README promises; the rest are their parts.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
PY    := $(BIN)/python
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)
SANITY_ROOT := build/sanity/ansible_collections/netstack/tuning
# Test tooling, benchmarks and lab scripts run on the controller only, with Python 3.11;
# sanity covers what ships to managed hosts (plugins/, roles/, playbooks/, docs).
SANITY_EXCLUDE := tests/unit/ tests/support/ tests/integration/pytest/ tests/integration/shm/ tests/lab/ tests/vm/ benchmarks/ scripts/ .ci/ molecule/

.PHONY: setup setup-demo demo test unit sanity lint packaging integration molecule image lab-test bench bench-sysctl bench-tune bench-tcp bench-shm bench-amp bench-zerocopy bench-traffic bench-fleet bench-ivshmem clean

setup:            ## install system packages (the main job's and the tests') and the virtualenv (idempotent)
	@scripts/bootstrap.sh

setup-demo:       ## install only what the main job needs
	@scripts/bootstrap.sh demo

demo: setup-demo  ## the main job on this machine (lab form): site.yml (all six capabilities), report, rollback
	ANSIBLE_STDOUT_CALLBACK=netstack.tuning.demo $(BIN)/ansible-playbook -i inventories/local playbooks/demo.yml $(DEMO_ARGS) || \
	  { echo "make demo: the run failed; putting the machine back (playbooks/rollback.yml)"; \
	    $(BIN)/ansible-playbook -i inventories/local playbooks/rollback.yml; exit 1; }

test: setup       ## everything CI runs: two lanes (host suites | Molecule VMs), timing table, leftover check
	$(PY) tests/support/suite.py $(SUITE)

unit:
	$(PY) -m pytest tests/unit -q

sanity:           ## ansible-test sanity on a copy placed at ansible_collections/netstack/tuning
	@rm -rf build/sanity && mkdir -p $(SANITY_ROOT) ~/.ansible/test/cache
	@v=$$(grep -oP "pip='\\K[0-9.]+" $(VENV)/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1); \
	  cp scripts/ansible_test_get_pip.py ~/.ansible/test/cache/get_pip_$${v//./_}.py
	@git ls-files -co --exclude-standard | grep -v '^collections/' | rsync -a --files-from=- ./ $(SANITY_ROOT)/
	@cd $(SANITY_ROOT) && git init -q && git add -A && \
	  excl=$$(for d in $(SANITY_EXCLUDE); do [ -e "$$d" ] && echo "--exclude $$d"; done); \
	  $(CURDIR)/$(BIN)/ansible-test sanity --python 3.11 --requirements --color no $$excl

lint:             ## ansible-lint, production profile, on roles and playbooks
	$(BIN)/ansible-lint --profile production roles/ playbooks/ inventories/ awx/ tests/integration/targets/

packaging:        ## galaxy build -> install into a clean path -> ansible-doc every module and role
	$(PY) -m pytest tests/packaging -q

integration:      ## modules against this machine's kernel, in throwaway namespaces
	tests/integration/run.sh
	$(PY) -m pytest tests/integration/pytest -q
	/usr/bin/python3 -m pytest tests/integration/shm -q -rxX  # the same-host path: needs bcc (Debian's python)
	/usr/bin/python3 -m pytest tests/integration/traffic -q  # the traffic collector: needs bcc (Debian's python)

image:            ## the Debian 12 guest image for Molecule (cached by recipe hash)
	tests/vm/build-image.sh

molecule: image   ## roles on QEMU VMs, every scenario (see docs/testing.md)
	tests/vm/run-molecule.sh

lab-test:         ## the many-host SSH lab: start, playbook over SSH, stop, nothing left
	$(PY) -m pytest tests/lab -q

bench: bench-sysctl bench-tune bench-tcp bench-shm bench-amp bench-zerocopy bench-traffic bench-fleet  ## all benchmarks; results under benchmarks/results/

bench-sysctl:     ## 20 keys: sysctl_set vs ansible.posix.sysctl
	$(PY) benchmarks/sysctl_apply.py --repeats 5

bench-tune:       ## tuning: optimizer quality (synthetic); every scenario: defaults / tuned profiles / study winner; proxy-churn with the client tuned; successive halving (~1.3 h)
	$(PY) benchmarks/tune_optimizer.py --seeds 20 --budget 300
	$(PY) benchmarks/tune_scenarios.py --trials 40 --rounds 8 --trial-duration 3
	$(PY) benchmarks/tune_scenarios.py --scenario proxy-churn --tune-client --tag=-client --trials 40 --rounds 8 --trial-duration 3
	$(PY) benchmarks/tune_halving.py --trials 12 --seeds 2 --repeats 3 --halving 3 --trial-duration 2 --verify-rounds 6

bench-tcp:        ## per-connection TCP tuning: sockops overhead, and short-flow FCT under loss
	/usr/bin/python3 benchmarks/tcp_tuning_overhead.py --repeats 7
	/usr/bin/python3 benchmarks/tcp_tuning_gain.py

bench-shm:        ## same-host path vs TCP loopback vs Unix sockets, per client (sockperf, iperf3, redis, wrk, pgbench), then the tc program's cost to other TCP (~18 min)
	/usr/bin/python3 benchmarks/shm_path_bench.py
	/usr/bin/python3 benchmarks/shm/tc_cost.py

bench-amp:        ## AMP: redis + redis-benchmark under stress-ng: default / irqbalance / static / dynamic partition
	/usr/bin/python3 benchmarks/amp_bench.py

bench-zerocopy:   ## zero-copy: size x mode table on loopback and veth, crossover; module loop vs a plain C loop
	/usr/bin/python3 benchmarks/zerocopy_bench.py

bench-traffic:    ## traffic insight: detection F1 per kind on two generators (trafficgen; worldgen tuning/unseen/UTC-only), forecast vs seasonal-naive, records/s at 1M/10M; collector overhead on veth
	$(PY) benchmarks/traffic_bench.py --seeds 10 --repeats 3
	/usr/bin/python3 benchmarks/traffic_collector_overhead.py --repeats 5

bench-fleet:      ## fleet rollout over SSH to 1/10/50 lab hosts: 20 sysctls + tcp_tuning vs 20 ansible.posix.sysctl tasks
	$(PY) benchmarks/fleet_rollout.py --sizes 1,10,50 --repeats 5,3,2 --noop-sizes 1,10 --forks 50

bench-ivshmem:    ## cross-VM prototype: ivshmem rings vs TCP between two lab VMs (not in `bench`: ~4-9 min of VMs)
	benchmarks/ivshmem/run.sh

clean:
	rm -rf build .pytest_cache tests/output
