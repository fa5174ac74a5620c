#!/bin/sh
# Create the secret files docker-compose.yml hands to its services, each a random password, in ./secrets/
# (or the directory given). Existing files are kept, so running it again changes nothing.
#
# The directory is private to you (0700); the files in it are 0644 because the containers read them as
# their own unprivileged users (Kafka's appuser, the pipeline's uid 10001), which compose cannot map
# for file secrets. Nobody else on the host can reach them through the private directory.
set -eu
dir=${1:-secrets}
umask 022
mkdir -p "$dir"
chmod 700 "$dir"
for name in kafka_admin_password kafka_pipeline_password risingwave_root_password; do
  if [ -e "$dir/$name" ]; then
    echo "kept    $dir/$name"
  else
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$dir/$name"  # 48 hex digits
    chmod 644 "$dir/$name"
    echo "created $dir/$name"
  fi
done
