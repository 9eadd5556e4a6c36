#!/bin/sh
# Start one broker from environment variables (docker compose, Kubernetes).
#   RAFTKA_ID         broker id; default: the StatefulSet ordinal of $HOSTNAME plus one
#   RAFTKA_VOTERS     Raft voters, "1@host:9091,2@host:9091,3@host:9091" (required for >1 node)
#   RAFTKA_VOTER_COUNT  instead of RAFTKA_VOTERS in a StatefulSet: N voters, pods <name>-0 ..
#                     <name>-(N-1) as brokers 1..N, each at its pod name plus the domain this
#                     broker's advertised name adds to its own ($HOSTNAME raftka-2 advertised
#                     as raftka-2.raftka: voters 1@raftka-0.raftka:9091,2@raftka-1.raftka:9091,...)
#   RAFTKA_ADVERTISED host name other brokers and clients use; default: $HOSTNAME
#   RAFTKA_DATA_DIR   default /var/lib/raftka
#   RAFTKA_SETTINGS   extra "key=value key=value" broker settings (Kafka names allowed)
#   RAFTKA_KAFKA_LISTENERS            Kafka's listeners, "NAME://host:port,..." (default: one
#                                     listener, PLAINTEXT on 9092, advertised at the host above)
#   RAFTKA_KAFKA_ADVERTISED_LISTENERS Kafka's advertised.listeners, e.g.
#                                     "EXTERNAL://127.0.0.1:19092" for clients outside
#   RAFTKA_GRPC_LISTENERS / RAFTKA_GRPC_ADVERTISED_LISTENERS  the same for extra gRPC
#                                     listeners (grpc.listeners), besides the main one on 9090
#   RAFTKA_CLUSTER_SECRET_FILE / RAFTKA_CLUSTER_SECRET  the secret every broker of the cluster
#                                     shares (read by the broker itself; required for >1 node)
#   RAFTKA_RAFT_BIND  where the Raft listener binds; default 0.0.0.0:9091 (the container's
#                     own network namespace; peers are authenticated with the secret)
#   RAFTKA_SECURITY   unset: the listeners' protocols are their names (or RAFTKA_SETTINGS' map).
#                     sasl: every Kafka and gRPC listener (the main one on 9090 too) is
#                     SASL_PLAINTEXT with SCRAM-SHA-512 only, the authorizer is on and
#                     RAFTKA_ADMIN_USER is the super user (compose's default);
#                     off: every listener PLAINTEXT, no authorizer (labs). Both write
#                     listener.security.protocol.map for the names in the two listener lists.
#   RAFTKA_ADMIN_USER the super user under RAFTKA_SECURITY=sasl (created by compose's one-shot
#                     raftka-admin service, with the cluster secret's authority)
# `raftka-entrypoint make-secret FILE` writes a new secret to FILE unless it exists (compose's
# one-shot raftka-secret service).
set -eu
if [ "${1:-}" = "make-secret" ]; then
  exec raftka cluster secret "$2"
fi
if [ -z "${RAFTKA_ID:-}" ]; then
  ordinal="${HOSTNAME##*-}"
  case "$ordinal" in
    ''|*[!0-9]*) echo "raftka: set RAFTKA_ID (cannot derive it from HOSTNAME=$HOSTNAME)" >&2; exit 2 ;;
  esac
  RAFTKA_ID=$((ordinal + 1))
fi
host="${RAFTKA_ADVERTISED:-$HOSTNAME}"
if [ -z "${RAFTKA_VOTERS:-}" ] && [ -n "${RAFTKA_VOTER_COUNT:-}" ]; then
  case "$RAFTKA_VOTER_COUNT" in ''|*[!0-9]*|0)
    echo "raftka: RAFTKA_VOTER_COUNT must be a positive number, not '$RAFTKA_VOTER_COUNT'" >&2
    exit 2 ;;
  esac
  case "$HOSTNAME" in *-*) ;; *)
    echo "raftka: RAFTKA_VOTER_COUNT needs HOSTNAME=<name>-<ordinal>, not $HOSTNAME" >&2
    exit 2 ;;
  esac
  case "$host" in "$HOSTNAME"|"$HOSTNAME".*) ;; *)
    echo "raftka: with RAFTKA_VOTER_COUNT the advertised name must be HOSTNAME or" \
      "HOSTNAME.<domain> (HOSTNAME=$HOSTNAME, advertised $host)" >&2
    exit 2 ;;
  esac
  domain="${host#"$HOSTNAME"}"
  i=0
  while [ "$i" -lt "$RAFTKA_VOTER_COUNT" ]; do
    RAFTKA_VOTERS="${RAFTKA_VOTERS:+$RAFTKA_VOTERS,}$((i + 1))@${HOSTNAME%-*}-$i$domain:9091"
    i=$((i + 1))
  done
fi
set -- raftka broker --id "$RAFTKA_ID" --data-dir "${RAFTKA_DATA_DIR:-/var/lib/raftka}" \
  --listen 0.0.0.0:9090 --advertised-host "$host" --raft-listen "$host:9091" \
  --raft-bind "${RAFTKA_RAFT_BIND:-0.0.0.0:9091}" "$@"
if [ -n "${RAFTKA_KAFKA_LISTENERS:-}" ]; then
  set -- "$@" --set "listeners=$RAFTKA_KAFKA_LISTENERS"
  if [ -n "${RAFTKA_KAFKA_ADVERTISED_LISTENERS:-}" ]; then
    set -- "$@" --set "advertised.listeners=$RAFTKA_KAFKA_ADVERTISED_LISTENERS"
  fi
else
  set -- "$@" --kafka-port 9092
fi
if [ -n "${RAFTKA_GRPC_LISTENERS:-}" ]; then
  set -- "$@" --set "grpc.listeners=$RAFTKA_GRPC_LISTENERS"
  if [ -n "${RAFTKA_GRPC_ADVERTISED_LISTENERS:-}" ]; then
    set -- "$@" --set "grpc.advertised.listeners=$RAFTKA_GRPC_ADVERTISED_LISTENERS"
  fi
fi
if [ -n "${RAFTKA_VOTERS:-}" ]; then
  set -- "$@" --voters "$RAFTKA_VOTERS"
fi
case "${RAFTKA_SECURITY:-}" in
  '') protocol= ;;
  off) protocol=PLAINTEXT ;;
  sasl)
    protocol=SASL_PLAINTEXT
    case "${RAFTKA_ADMIN_USER:-}" in ''|*[!A-Za-z0-9._@-]*)
      echo "raftka: RAFTKA_SECURITY=sasl needs RAFTKA_ADMIN_USER, a user name of letters," \
        "digits and . _ @ - (got '${RAFTKA_ADMIN_USER:-}')" >&2
      exit 2 ;;
    esac
    set -- "$@" --set grpc.security.protocol=SASL_PLAINTEXT \
      --set sasl.enabled.mechanisms=SCRAM-SHA-512 \
      --set authorizer.enabled=true --set "super.users=User:$RAFTKA_ADMIN_USER" ;;
  *) echo "raftka: RAFTKA_SECURITY must be sasl or off, not '$RAFTKA_SECURITY'" >&2; exit 2 ;;
esac
if [ -n "$protocol" ]; then
  # every listener name (Kafka's and the extra gRPC ones share the map) -> the one protocol
  map=
  for listener in $(printf '%s' "${RAFTKA_KAFKA_LISTENERS:-PLAINTEXT://:9092},${RAFTKA_GRPC_LISTENERS:-}" | tr ',' ' '); do
    name="${listener%%://*}"
    case ",$map," in *",$name:"*) ;; *) map="${map:+$map,}$name:$protocol" ;; esac
  done
  set -- "$@" --set "listener.security.protocol.map=$map"
fi
for setting in ${RAFTKA_SETTINGS:-}; do
  set -- "$@" --set "$setting"
done
exec "$@"
