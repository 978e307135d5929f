#!/usr/bin/env bash
# Make sure a Docker engine answers and is a Swarm manager. Idempotent: reuses what is there.
set -euo pipefail

log() { echo "[engine] $*" >&2; }

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

if ! engine_up; then
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing Debian's docker.io (no engine found)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
  fi
  if [ -z "${DOCKER_HOST:-}" ] && ! pgrep -x dockerd >/dev/null; then
    log "starting dockerd (log: /var/log/dockerd.log)"
    rm -f /var/run/docker.pid
    setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do engine_up && break; sleep 1; done
  engine_up || { log "the Docker engine did not answer within 60 s; see /var/log/dockerd.log"; exit 3; }
fi

state=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" != "active" ]; then
  log "initialising a single-node Swarm on 127.0.0.1"
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
log "engine $(docker version --format '{{.Server.Version}}') in Swarm mode"
