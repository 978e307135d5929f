# fleet: `make demo` deploys the stack and sends one prediction; `make test` runs every test.
# Both install what is missing first (Python env, Docker engine + Swarm, Consul, images).
PY := .venv/bin/python
# make test's workers (pytest-xdist, by group: tests/kit/groups.py). Two on CI's 2 cores: the 3-node cluster's
# group in one, every single-node group in the other, the cluster's containers under a cgroup of their own so
# that neither side starves the other (README, "How make test runs"); TEST_WORKERS=1 runs it all in turn
TEST_WORKERS ?= 2

.PHONY: setup demo test unit bench clean cluster cluster-down cuda-image

setup:
	bash scripts/setup.sh

demo:
	bash scripts/setup.sh demo
	bash scripts/demo.sh

test: setup
	bash scripts/test-images.sh
	bash scripts/browser.sh
	$(PY) -m pytest -v -p no:cacheprovider --durations=40 --junitxml=build/junit.xml -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder tests

unit:
	$(PY) -m pytest -q tests/unit

bench: setup
	bash scripts/test-images.sh
	$(PY) bench/service_bench.py
	$(PY) bench/oip_bench.py
	$(PY) bench/oip_bench.py --model digits --unbatched
	$(PY) bench/peer_bench.py
	$(PY) bench/gateway_bench.py
	$(PY) bench/deploy_bench.py
	$(PY) bench/rollout_bench.py
	$(PY) bench/consul_restart_bench.py
	$(PY) bench/scale_bench.py

# fleet/inference:cuda-base, :1-cuda and :2-cuda: the service on torch's CUDA build (several GB; not in CI)
cuda-image: setup
	bash scripts/images.sh cuda

# a disposable 3-node Swarm of docker-in-docker nodes with a registry (scripts/cluster.sh; README, "Several nodes")
cluster: setup
	bash scripts/cluster.sh up

cluster-down:
	bash scripts/cluster.sh down

clean: cluster-down
	-docker stack rm fleet fleettest 2>/dev/null
	rm -rf build .venv
