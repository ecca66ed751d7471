"""A private RabbitMQ node for the tests that restart the broker: its own node name, ports, data and config.

The machine's shared RabbitMQ (127.0.0.1:5672) serves other test runs; a
test that stops and starts the broker gets a node of its own instead, from
the same Debian ``rabbitmq-server``, with every path and port set through
RabbitMQ's environment variables (``RABBITMQ_NODENAME``,
``RABBITMQ_NODE_PORT``, ``RABBITMQ_DIST_PORT``, ``RABBITMQ_MNESIA_BASE``,
...), so it shares nothing but epmd. Its data directory outlives a restart,
as a production broker's does: durable queues come back.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dev.stack import Proc, restartable_port, wait_until

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian's; /usr/sbin's wrapper would switch user


def rabbitmq_installed() -> bool:
    return os.access(SERVER, os.X_OK) or shutil.which("rabbitmq-server") is not None


class RabbitNode:
    """``rabbitmq-server`` on free loopback ports with guest/guest; ``stop()`` and ``start()`` keep its data."""

    def __init__(self, base: Path) -> None:
        self.base = base
        # Below the ephemeral range: the port stays free while the node is down (dev/stack.py).
        self.port = restartable_port()
        self.dist_port = restartable_port()
        self.name = f"pushserver-test-{self.port}@localhost"
        self.proc: Proc | None = None
        base.mkdir(parents=True, exist_ok=True)
        (base / "enabled_plugins").write_text("[].\n")  # no management plugin: it would want port 15672
        (base / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's, which names the shared node
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        b = self.base
        return {
            "HOME": str(b),
            "RABBITMQ_CONF_ENV_FILE": str(b / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(b / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(b / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self, timeout: float = 120) -> RabbitNode:
        self.dist_port = restartable_port()  # Erlang distribution: any port will do, a fresh one each start
        exe = SERVER if os.access(SERVER, os.X_OK) else shutil.which("rabbitmq-server") or SERVER
        self.proc = Proc(f"rabbitmq-{self.port}", [exe], self.base, env=self.env())
        wait_until(
            lambda: self.answers() or not self.proc or not self.proc.alive(),
            timeout,
            f"RabbitMQ node {self.name} to listen",
            interval=0.25,
        )
        assert self.proc.alive(), self.proc.log()[-3000:]
        return self

    def answers(self) -> bool:
        from kombu import Connection

        try:
            with Connection(self.url, connect_timeout=1) as conn:
                conn.connect()
                return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=60)
            self.proc = None
