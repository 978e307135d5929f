#!/usr/bin/env bash
# A disposable multi-node Swarm on this machine, for tests and trials (`make cluster`, `make cluster-down`):
#   scripts/cluster.sh up [N]    N docker-in-docker nodes (default 3): fleet-node1 the manager, the others
#                                workers; a registry; the images pushed to it. Idempotent.
#   scripts/cluster.sh nodes [N] the same without pushing the images
#   scripts/cluster.sh push      tag the local fleet images into the registry and push them (again)
#   scripts/cluster.sh down      remove all of it (by the label fleet.cluster, so a killed run's leftovers too)
# Each node is a container running Debian's dockerd (image fleet/node:bookworm, from debootstrap). What
# the host reaches is published on 127.0.0.1 only (node i: gateway 3i080, ops 3i081, Consul 3i501,
# Prometheus 3i090, engine 3i376 over TLS with certificates made here); the manager's engine is node 1's,
# 127.0.0.1:31376: `. build/cluster/cluster.env` points docker, fleet and the tests at it. Each node advertises
# one fake GPU (NVIDIA-GPU=GPU-fake-node<i>) for the GPU placement tests.
# The registry (Debian's docker-registry, plain HTTP and no login, Debian's htpasswd block taken out: a
# test bed's registry, never a production one) is 127.0.0.1:31500 from the host and, through a forwarder
# in every node, from the nodes too: one name for an image everywhere, and Docker trusts a registry on
# 127.0.0.0/8 without TLS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
action=${1:-up}
nodes=${2:-${FLEET_CLUSTER_NODES:-3}}
label=fleet.cluster=1
net=fleet-nodes
image=fleet/node:bookworm
registry=127.0.0.1:31500
engine_port=31376
dir=$root/build/cluster
log() { echo "[cluster] $*" >&2; }
on() { local node=$1; shift; docker exec "$node" docker "$@"; }  # the docker CLI inside a node

down() {
  docker rm -f $(docker ps -aq --filter "label=$label") >/dev/null 2>&1 || true
  docker volume rm $(docker volume ls -q --filter "label=$label") >/dev/null 2>&1 || true
  docker network rm $(docker network ls -q --filter "label=$label") >/dev/null 2>&1 || true
  log "removed"
}

certificates() {  # a CA, the manager's server certificate (127.0.0.1 and its name) and a client certificate
  [ -s "$dir/client/key.pem" ] && return 0
  log "TLS certificates for the manager's engine"
  command -v openssl >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
  local tmp; tmp=$(mktemp -d)
  mkdir -p "$dir/server" "$dir/client"
  (cd "$tmp"
   openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=fleet-cluster-ca -keyout ca-key.pem -out ca.pem 2>/dev/null
   openssl req -newkey rsa:2048 -nodes -subj /CN=fleet-node1 -keyout server-key.pem -out server.csr 2>/dev/null
   printf 'subjectAltName=DNS:fleet-node1,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
   openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 -extfile server.ext -out server-cert.pem 2>/dev/null
   openssl req -newkey rsa:2048 -nodes -subj /CN=fleet -keyout key.pem -out client.csr 2>/dev/null
   printf 'extendedKeyUsage=clientAuth\n' >client.ext
   openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 -extfile client.ext -out cert.pem 2>/dev/null)
  cp "$tmp/ca.pem" "$tmp/server-cert.pem" "$tmp/server-key.pem" "$dir/server/"
  cp "$tmp/ca.pem" "$tmp/cert.pem" "$tmp/key.pem" "$dir/client/"
  chmod 0644 "$dir"/server/*.pem
  rm -rf "$tmp"
}

node_up() {  # start node $1 (index) unless it runs
  local i=$1 name=fleet-node$1
  [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] && return 0
  docker rm -f "$name" >/dev/null 2>&1 || true
  # --privileged is refused on machines whose capability bounding set lacks one (CAP_SYS_RESOURCE here):
  # every capability the bounding set has, the others dropped
  local bnd missing=() caps=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO
    SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD
    LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
    PERFMON BPF CHECKPOINT_RESTORE)
  bnd=$((16#$(awk '/^CapBnd/{print $2}' /proc/self/status)))
  for bit in "${!caps[@]}"; do (( (bnd >> bit) & 1 )) || missing+=(--cap-drop "${caps[$bit]}"); done
  local ports=(-p "127.0.0.1:3${i}080:8080" -p "127.0.0.1:3${i}081:8081" -p "127.0.0.1:3${i}501:8501"
               -p "127.0.0.1:3${i}090:9090")
  # one fake GPU a node, as a GPU node's daemon.json names its GPUs (node-generic-resources): Swarm places
  # replicas that reserve one (stacks/gpu.yml) by it, which tests/real/test_cluster_gpu.py checks with no GPU
  local engine=(-H unix:///var/run/docker.sock --node-generic-resource "NVIDIA-GPU=GPU-fake-node$i")
  # The nodes see the host's cgroups, so the containers they run would be the host's containers' siblings
  # (under /docker, one share each): the cluster's twenty or so outweighed a single-node stack's six, and
  # while the nodes started replicas, a single-node test beside them in the other worker was starved (its
  # canary's p99 1.86x the stable's in a two-worker run, a good canary rolled back). Under a parent of their
  # own, the cluster's containers together weigh as much as all of the host's: each side keeps at least
  # half of the 2 cores when both want them.
  engine+=(--cgroup-parent /fleet-cluster)
  # every node's engine over TLS on 127.0.0.1:3i376 (node 1's is the manager's, $engine_port): once nodes are
  # promoted to managers, fleet may list them all in DOCKER_HOST and follow whichever answers
  ports+=(-p "127.0.0.1:3${i}376:2376")
  engine+=(-H tcp://0.0.0.0:2376 --tlsverify --tlscacert=/certs/ca.pem --tlscert=/certs/server-cert.pem
           --tlskey=/certs/server-key.pem)
  docker volume create --label "$label" "$name-data" >/dev/null
  # /run a tmpfs: a node killed and started again finds no stale pid file of its dockerd
  docker run -d --name "$name" --hostname "$name" --label "$label" --network "$net" \
    --cap-add ALL "${missing[@]}" --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --security-opt systempaths=unconfined -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v "$name-data:/var/lib/docker" \
    -v "$dir/server:/certs:ro" --tmpfs /run "${ports[@]}" "$image" sh -c \
    "socat TCP-LISTEN:${registry#*:},bind=127.0.0.1,fork,reuseaddr TCP:fleet-registry:5000 & exec dockerd ${engine[*]}" >/dev/null
}

engine_ready() { for _ in $(seq 1 60); do on "$1" info >/dev/null 2>&1 && return 0; sleep 1; done; return 1; }

push() {  # the images a stack on the cluster runs, under the registry's name; layers travel once
  local started=$SECONDS
  for img in fleet/inference:1 fleet/inference:2 fleet/gateway:1 fleet/consul:1.8.7 fleet/prometheus:2.42 ${FLEET_CLUSTER_IMAGES:-}; do
    docker tag "$img" "$registry/$img"
    docker push -q "$registry/$img" >/dev/null
  done
  log "images pushed to $registry in $((SECONDS - started)) s"
}

up() {
  local started=$SECONDS
  bash "$root/scripts/base-image.sh" "$image" docker.io,iptables,ca-certificates,procps,iproute2,socat,docker-registry,openssl '["dockerd"]'
  certificates
  # nodes left by a run from another checkout (killed before its teardown) trust another CA: this
  # checkout's client certificate would be refused by their engines, so they go, and come up again below
  local node
  for node in $(docker ps -q --filter "label=$label" --filter "name=fleet-node"); do
    if ! docker exec "$node" cat /certs/ca.pem 2>/dev/null | cmp -s - "$dir/server/ca.pem"; then
      log "nodes made by another checkout (their engines trust another CA): removing them"
      docker rm -f $(docker ps -aq --filter "label=$label" --filter "name=fleet-node") >/dev/null 2>&1 || true
      docker volume rm $(docker volume ls -q --filter "label=$label" --filter "name=fleet-node") >/dev/null 2>&1 || true
      break
    fi
  done
  docker network inspect "$net" >/dev/null 2>&1 || docker network create --label "$label" "$net" >/dev/null
  if [ "$(docker inspect -f '{{.State.Running}}' fleet-registry 2>/dev/null)" != true ]; then
    docker rm -f fleet-registry >/dev/null 2>&1 || true
    docker volume create --label "$label" fleet-registry-data >/dev/null
    docker run -d --name fleet-registry --label "$label" --network "$net" -p "127.0.0.1:${registry#*:}:5000" \
      -v fleet-registry-data:/var/lib/docker-registry "$image" sh -c \
      'sed "/^auth:/,/^ *path:/d" /etc/docker/registry/config.yml >/tmp/registry.yml && exec docker-registry serve /tmp/registry.yml' >/dev/null
  fi
  for i in $(seq 1 "$nodes"); do node_up "$i"; done
  for i in $(seq 1 "$nodes"); do engine_ready "fleet-node$i" || { docker logs --tail 20 "fleet-node$i" >&2; log "fleet-node$i's engine did not start"; exit 1; }; done
  local addr; addr=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" fleet-node1)
  [ "$(on fleet-node1 info -f '{{.Swarm.LocalNodeState}}')" = active ] || on fleet-node1 swarm init --advertise-addr "$addr" >/dev/null
  local token; token=$(on fleet-node1 swarm join-token -q worker)
  for i in $(seq 2 "$nodes"); do
    [ "$(on "fleet-node$i" info -f '{{.Swarm.LocalNodeState}}')" = active ] || on "fleet-node$i" swarm join --token "$token" "$addr:2377" >/dev/null
  done
  cat >"$dir/cluster.env" <<ENV
# docker, fleet and the tests against the test cluster's manager (scripts/cluster.sh): TLS to 127.0.0.1:$engine_port
export DOCKER_HOST=tcp://127.0.0.1:$engine_port
export DOCKER_TLS_VERIFY=1
export DOCKER_CERT_PATH=$dir/client
export FLEET_REGISTRY=$registry
export FLEET_IMAGE=$registry/fleet/inference:2 FLEET_GATEWAY_IMAGE=$registry/fleet/gateway:1
export FLEET_CONSUL_IMAGE=$registry/fleet/consul:1.8.7 FLEET_PROMETHEUS_IMAGE=$registry/fleet/prometheus:2.42
export CONSUL_TLS_SERVER_NAME=consul
ENV
  log "$nodes nodes up in $((SECONDS - started)) s (manager fleet-node1 at $addr); . $dir/cluster.env"
}

case $action in
  up) up; push ;;
  nodes) up ;;
  push) push ;;
  down) down ;;
  *) echo "usage: scripts/cluster.sh up [N] | nodes [N] | push | down" >&2; exit 2 ;;
esac
