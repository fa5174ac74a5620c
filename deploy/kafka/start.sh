#!/bin/sh
# Start Apache Kafka for docker-compose.yml: one KRaft node (broker and controller) whose client listeners
# take SASL/SCRAM-SHA-512 logins only.
#
# Why a script: a SCRAM credential can only be created through an authenticated connection, so the first
# ones must be written into the metadata log while the storage is formatted ("kafka-storage format
# --add-scram", Kafka 3.5+); and the broker's own login (inter-broker) holds a password, which must come
# from a secret file, never from the compose file. The image's own launcher does neither.
#
# Listeners (BROKER_* variables below change ports and addresses, e.g. for a test on loopback):
#   INTERNAL  0.0.0.0:19092  SASL_PLAINTEXT, advertised as $BROKER_INTERNAL_HOST:19092 (the compose network)
#   EXTERNAL  0.0.0.0:9092   SASL_PLAINTEXT, advertised as $BROKER_EXTERNAL_ADDRESS (what compose publishes)
#   CONTROLLER 127.0.0.1:9093 PLAINTEXT, the KRaft quorum of this one node: loopback only, never published
# Users (SCRAM-SHA-512): admin (the broker itself and the health check) and pipeline (the services and
# RisingWave's connectors), passwords from $BROKER_SECRETS_DIR/kafka_admin_password and
# .../kafka_pipeline_password. Credentials are created once, when the data volume is first formatted;
# later changes to the files need kafka-configs.sh --alter (see README, "Production stack").
set -eu

home=${BROKER_HOME:-/opt/kafka}
secrets=${BROKER_SECRETS_DIR:-/run/secrets}
data=${BROKER_DATA_DIR:-/var/lib/kafka/data}
config_dir=${BROKER_CONFIG_DIR:-$home/config}
listen=${BROKER_LISTEN_ADDRESS:-0.0.0.0}
internal_port=${BROKER_INTERNAL_PORT:-19092}
external_port=${BROKER_EXTERNAL_PORT:-9092}
controller_port=${BROKER_CONTROLLER_PORT:-9093}
internal_host=${BROKER_INTERNAL_HOST:-kafka}
external_address=${BROKER_EXTERNAL_ADDRESS:-localhost:$external_port}
cluster_id=${BROKER_CLUSTER_ID:?set BROKER_CLUSTER_ID (kafka-storage.sh random-uuid)}

die() { echo "kafka start: $*" >&2; exit 1; }

# A password goes into JAAS and --add-scram syntax unquoted, so only characters that need no quoting
# there are taken (openssl rand -hex 32 makes one).
password() {
  file="$secrets/$1"
  [ -r "$file" ] || die "cannot read the secret $file"
  value=$(cat "$file")
  case "$value" in
    *[!A-Za-z0-9._~-]*) die "$file: use only letters, digits and . _ ~ - (e.g. openssl rand -hex 32)" ;;
  esac
  [ "${#value}" -ge 16 ] || die "$file: at least 16 characters"
  printf '%s' "$value"
}

admin=$(password kafka_admin_password)
pipeline=$(password kafka_pipeline_password)
login="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin\";"

umask 077  # the files below hold the admin password
server="$config_dir/compose-server.properties"
cat > "$server" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
controller.listener.names=CONTROLLER
listeners=INTERNAL://$listen:$internal_port,EXTERNAL://$listen:$external_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=INTERNAL://$internal_host:$internal_port,EXTERNAL://$external_address
listener.security.protocol.map=INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=INTERNAL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.internal.scram-sha-512.sasl.jaas.config=$login
listener.name.external.scram-sha-512.sasl.jaas.config=$login
log.dirs=$data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPERTIES

# What the health check (and an operator's kafka-*.sh --command-config) logs in with.
cat > "$config_dir/compose-admin.properties" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$login
PROPERTIES

"$home/bin/kafka-storage.sh" format --ignore-formatted --cluster-id "$cluster_id" --config "$server" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=$admin]" \
  --add-scram "SCRAM-SHA-512=[name=pipeline,password=$pipeline]"

exec "$home/bin/kafka-server-start.sh" "$server"
