#!/usr/bin/env bash
# Make sure RabbitMQ answers on 127.0.0.1:5672 (guest/guest) for the fault tests:
# install Debian's rabbitmq-server where it is missing, start it where it is not
# running, then wait until the node is up. Idempotent: a running broker is left alone.
set -euo pipefail

PORT=5672
TIMEOUT=${RABBITMQ_START_TIMEOUT:-120}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

if port_open; then
  echo "rabbitmq: already answering on 127.0.0.1:$PORT"
  exit 0
fi

if ! command -v rabbitmq-server >/dev/null; then
  echo "rabbitmq: installing Debian's rabbitmq-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi

# The package may have started it (an init system in charge); otherwise start it here.
if ! port_open && ! rabbitmqctl -q status >/dev/null 2>&1; then
  echo "rabbitmq: starting rabbitmq-server -detached"
  rabbitmq-server -detached
fi

deadline=$((SECONDS + TIMEOUT))
until port_open && rabbitmqctl -q status >/dev/null 2>&1; do
  if (( SECONDS > deadline )); then
    echo "rabbitmq: not up after ${TIMEOUT}s; see /var/log/rabbitmq/" >&2
    exit 1
  fi
  sleep 1
done
echo "rabbitmq: up on 127.0.0.1:$PORT"
