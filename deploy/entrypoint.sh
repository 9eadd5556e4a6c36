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
for setting in ${RAFTKA_SETTINGS:-}; do
  set -- "$@" --set "$setting"
done
exec "$@"
