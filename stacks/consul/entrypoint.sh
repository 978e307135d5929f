#!/bin/sh
# The stack's Consul, locked: ACLs on with default deny, and its HTTP API on HTTPS only (8501), with the
# certificates and tokens the stack gives it as Swarm secrets (scripts/consul-secrets.sh makes them).
# Mounted as a Swarm config, so it works on fleet's image and on hashicorp/consul alike.
#
# It writes the agent's ACL and TLS configuration, starts `consul "$@"`, and once a leader answers,
# makes sure (idempotently) that the least-privilege policies and tokens exist, with the secret IDs the
# stack handed to their users:
#   fleet-replica   the replicas: a service identity for FLEET_SERVICE only, and read of its keys
#   fleet-dns       the agent's default token: what the gateway's DNS lookups may see (read only)
#   fleet-agent     the agent's own token (its node)
#   fleet           fleet's controller (README: "fleet's Consul policy")
# The management token (master) stays with the operator and this server; no other container has it.
# Servers run Raft at raft_multiplier 2: a new leader within seconds of the leader's loss (Consul's default,
# 5, took 15 s on the test cluster; 1, HashiCorp's production value, leaves less slack on a busy host and
# was not tried).
# With FLEET_CONSUL_CLIENT=1 (the stack's consul-agent) it is a client agent of the stack's servers, and
# with FLEET_CONSUL_EXTERNAL=1 (stacks/external-consul.yml) one of the operator's servers: only the TLS and
# the agent and default tokens (the consul_agent_token and consul_dns_token secrets: the stack's, or the
# operator's) are written, and nothing is created.
#
# No token or key is ever on a command line (the host's `ps` shows every process's): the CLI calls below
# read their token from a file (CONSUL_HTTP_TOKEN_FILE), the gossip key is in the configuration file, and
# a token made with a given secret ID is PUT through the HTTP API from the shell (api_put). Agents verify
# the servers they talk to (verify_outgoing, verify_server_hostname: the CA's server.dc1.consul).
#
# Every agent is named FLEET_CONSUL_NODE (its Swarm node's hostname: a replica finds its own node's agent
# by it) and encrypts gossip with the consul_gossip_key secret when it has one. It joins the agents of the
# services named in FLEET_CONSUL_JOIN by name (`-retry-join=consul`, every 2 s until one answers): Consul
# resolves the name at each try, and Swarm's DNS lists a task once its health check passes (its HTTP API
# answers), so servers started at once find each other as each comes up.
set -eu
umask 077  # the configuration and token files written below are the consul user's alone
secrets=${FLEET_CONSUL_SECRETS_DIR:-/run/secrets}
service=${FLEET_SERVICE:-inference}
conf=${FLEET_CONSUL_CONFIG:-/tmp/fleet-consul.json}
read_secret() { tr -d '\n\r ' <"$secrets/$1"; }

for name in ${FLEET_CONSUL_JOIN:-}; do set -- "$@" -retry-join="$name"; done
[ -z "${FLEET_CONSUL_JOIN:-}" ] || set -- "$@" -retry-interval=2s
[ -z "${FLEET_CONSUL_NODE:-}" ] || set -- "$@" -node="$FLEET_CONSUL_NODE"
gossip=""
[ ! -s "$secrets/consul_gossip_key" ] || gossip='"encrypt": "'"$(read_secret consul_gossip_key)"'",'

tls=''"$gossip"' "ports": {"http": -1, "https": 8501}, "verify_incoming": false, "verify_incoming_https": false,
  "verify_outgoing": true, "verify_server_hostname": true,
  "ca_file": "'"$secrets"'/consul_ca", "cert_file": "'"$secrets"'/consul_cert", "key_file": "'"$secrets"'/consul_key"'
if [ "${FLEET_CONSUL_CLIENT:-}" = "1" ] || [ "${FLEET_CONSUL_EXTERNAL:-}" = "1" ]; then
  cat >"$conf" <<EOF
{"acl": {"enabled": true, "default_policy": "deny", "down_policy": "extend-cache",
         "tokens": {"agent": "$(read_secret consul_agent_token)", "default": "$(read_secret consul_dns_token)"}},
 $tls}
EOF
  exec consul "$@" -config-file="$conf"
fi

master=$(read_secret consul_master_token)
# this server's own agent_master token, made at each start and used only below (joining the other servers
# before there is a leader to resolve any other token); never the management token, which the agent would
# then take for its agent_master too, and refuse it everything else
agent_master=$(cat /proc/sys/kernel/random/uuid)
agent_master_file=$(mktemp)
printf '%s' "$agent_master" >"$agent_master_file"
cat >"$conf" <<EOF
{
  "performance": {"raft_multiplier": 2},
  "acl": {"enabled": true, "default_policy": "deny", "down_policy": "extend-cache",
          "tokens": {"master": "$master", "agent_master": "$agent_master", "agent": "$(read_secret consul_agent_token)",
                     "default": "$(read_secret consul_dns_token)"}},
  $tls
}
EOF
consul "$@" -config-file="$conf" &
agent=$!
trap 'kill -TERM "$agent" 2>/dev/null' TERM INT

unset CONSUL_HTTP_TOKEN  # every call below reads its token from a file: the management token, unless it says
export CONSUL_HTTP_ADDR=https://127.0.0.1:8501 CONSUL_CACERT="$secrets/consul_ca" \
  CONSUL_HTTP_TOKEN_FILE="$secrets/consul_master_token"

# The other servers, joined by address (Swarm's DNS for FLEET_CONSUL_JOIN, this task's own left out) while
# this one sees fewer than -bootstrap-expect alive: a server that started alone, or joined only itself by
# name, finds the others as they come up, with its agent_master token (the agent honours it on its own).
expect=$(printf '%s\n' "$@" | sed -n 's/^-bootstrap-expect=//p')
join_servers() {
  own=$(hostname -i 2>/dev/null || true)
  while kill -0 "$agent" 2>/dev/null; do
    alive=$(CONSUL_HTTP_TOKEN_FILE="$agent_master_file" consul members -status=alive 2>/dev/null \
            | awk '$4 == "server"' | wc -l)
    if [ "$alive" -lt "${expect:-1}" ]; then
      others=$(for name in ${FLEET_CONSUL_JOIN:-}; do getent ahostsv4 "$name" | awk '{print $1}'; done | sort -u \
               | grep -vxF -e none $(for a in $own; do printf -- '-e %s ' "$a"; done) || true)
      [ -z "$others" ] || CONSUL_HTTP_TOKEN_FILE="$agent_master_file" consul join $others >/dev/null 2>&1 || true
    fi
    sleep 2
  done
}
[ "${expect:-1}" -le 1 ] || [ -z "${FLEET_CONSUL_JOIN:-}" ] || join_servers &

until consul acl policy list >/dev/null 2>&1; do  # a leader, and the ACL system up (however long it takes)
  if ! kill -0 "$agent" 2>/dev/null; then
    echo "fleet-consul: the agent exited before the ACL system came up" >&2
    wait "$agent"; exit $?
  fi
  sleep 0.5
done

policy() {  # NAME RULES: create the policy, or bring an existing one to these rules (another server may
  # create it at the same moment: then it exists, and is updated)
  consul acl policy create -name "$1" -rules "$2" >/dev/null 2>&1 \
    || consul acl policy update -name "$1" -rules "$2" >/dev/null
}
api_put() {  # PATH JSON: PUT JSON to this agent's HTTP API with the management token, sent in the request
  # (never on a command line: printf is the shell's own); succeeds on a 200. curl where the image has it
  # (hashicorp/consul), else openssl (fleet's image, whose ca-certificates brings it).
  if command -v curl >/dev/null 2>&1; then
    printf 'X-Consul-Token: %s\n' "$(read_secret consul_master_token)" \
      | curl -sS --fail -o /dev/null --cacert "$secrets/consul_ca" -H @- -X PUT --data-binary "@$2" \
        "https://127.0.0.1:8501$1"
    return
  fi
  { printf 'PUT %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Consul-Token: %s\r\nContent-Type: application/json\r\n' \
      "$1" "$(read_secret consul_master_token)"
    printf 'Content-Length: %s\r\nConnection: close\r\n\r\n' "$(wc -c <"$2")"
    cat "$2"; } \
    | openssl s_client -quiet -connect 127.0.0.1:8501 -CAfile "$secrets/consul_ca" -verify_return_error 2>/dev/null \
    | head -n 1 | grep -q '^HTTP/1\.[01] 200'
}
token() {  # SECRET-FILE DESCRIPTION POLICY [SERVICE]: create the token with that secret ID (its policy, and a
  # service identity for SERVICE), or bring an existing one to them (a stack deployed again over its Consul
  # data: e.g. the replicas' service identity, now <stack>-inference, was plain `inference` before names
  # were scoped by stack)
  name=$1 file=$secrets/$1 what=$2 policy=$3 identity=${4:-}
  set -- -policy-name "$policy"  # the positional parameters are the CLI's flags from here on
  [ -z "$identity" ] || set -- "$@" -service-identity "$identity"
  id=$(CONSUL_HTTP_TOKEN_FILE="$file" consul acl token read -self -format=json 2>/dev/null \
       | sed -n 's/.*"AccessorID": *"\([^"]*\)".*/\1/p' | head -n 1)
  if [ -n "$id" ]; then
    consul acl token update -id "$id" -description="$what" "$@" >/dev/null
    return
  fi
  body=$(mktemp) extra=""
  [ -z "$identity" ] || extra=', "ServiceIdentities": [{"ServiceName": "'"$identity"'"}]'
  printf '{"SecretID": "%s", "Description": "%s", "Policies": [{"Name": "%s"}]%s}' "$(read_secret "$name")" "$what" \
    "$policy" "$extra" >"$body"
  if ! api_put /v1/acl/token "$body"; then
    sleep 1  # another server made it meanwhile: bring that one to these settings
    id=$(CONSUL_HTTP_TOKEN_FILE="$file" consul acl token read -self -format=json \
         | sed -n 's/.*"AccessorID": *"\([^"]*\)".*/\1/p' | head -n 1)
    consul acl token update -id "$id" -description="$what" "$@" >/dev/null
  fi
  rm -f "$body"
}
policy fleet-agent 'node_prefix "" { policy = "write" } agent_prefix "" { policy = "read" } service_prefix "" { policy = "read" }'
policy fleet-dns 'node_prefix "" { policy = "read" } service_prefix "" { policy = "read" }'
policy fleet-replica "key_prefix \"fleet/traffic/$service/\" { policy = \"read\" } key \"fleet/config/$service\" { policy = \"read\" }"
policy fleet "key_prefix \"fleet/\" { policy = \"write\" } session_prefix \"\" { policy = \"write\" } node \"fleet-locks\" { policy = \"write\" } service \"$service\" { policy = \"write\" } service_prefix \"\" { policy = \"read\" } node_prefix \"\" { policy = \"read\" } operator = \"read\""
token consul_agent_token "fleet: the agent's own token" fleet-agent
token consul_dns_token "fleet: the agent's default token (DNS for the gateway)" fleet-dns
token consul_replica_token "fleet: replicas of $service" fleet-replica "$service"
token consul_fleet_token "fleet: the controller" fleet
echo "fleet-consul: ACLs (default deny) and HTTPS on 8501 ready; policies and tokens in place" >&2
status=0
wait "$agent" || status=$?
kill -0 "$agent" 2>/dev/null && { wait "$agent" || status=$?; }  # a signal ended the first wait: let it leave
exit "$status"
