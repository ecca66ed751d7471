"""Real redis-servers the way production runs them: with TLS (certificates made here with openssl), with
passwords and ACL users, and Sentinel (a master, a replica and three sentinels), all on loopback ports.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from dev.stack import Proc, free_port, wait_until


def redis_exe(name: str = "redis-server") -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} is not installed: `make test` installs Debian's redis-server and redis-sentinel")
    return exe


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA and a server certificate it signed, for 127.0.0.1 and localhost."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path, name: str = "ca") -> Certificates:
    """Make a CA and a server certificate (SAN IP:127.0.0.1, DNS:localhost) with the openssl command line."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / f"{name}.{ext}" for ext in ("key", "pem", "server.key", "csr", "server.pem")
    )
    ext = directory / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN=pushserver test {name}",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    return Certificates(ca, cert, key)


def start_tls_redis(log_dir: Path, certs: Certificates, *extra: str, password: str | None = None) -> tuple[Proc, int]:
    """redis-server answering TLS only (``--port 0 --tls-port P``), with the given server certificate."""
    port = free_port()
    proc = Proc(
        f"redis-tls-{port}",
        [
            redis_exe(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(certs.cert),
            "--tls-key-file",
            str(certs.key),
            "--tls-ca-cert-file",
            str(certs.ca),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(log_dir),
            *extra,
        ],
        log_dir,
    )

    def answers() -> bool:
        client = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(certs.ca), socket_timeout=1, password=password)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    wait_until(lambda: answers() or not proc.alive(), 15, "the TLS redis-server to answer PING")
    assert proc.alive(), proc.log()
    return proc, port


def start_redis_server(
    log_dir: Path, name: str, *args: str, port: int | None = None, password: str | None = None
) -> tuple[Proc, int]:
    """A plain redis-server with extra config directives (``--requirepass``, ``--user``, ``--replicaof``)."""
    port = port or free_port()
    proc = Proc(
        f"{name}-{port}",
        [
            redis_exe(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(log_dir),
            *args,
        ],
        log_dir,
    )

    def answers() -> bool:
        client = redis.Redis(port=port, password=password, socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    wait_until(lambda: answers() or not proc.alive(), 15, f"{name} to answer PING")
    assert proc.alive(), proc.log()
    return proc, port


@dataclass
class SentinelSet:
    """One master, one replica and three sentinels watching them under ``master_name``."""

    master_name: str
    master: Proc
    master_port: int
    replica: Proc
    replica_port: int
    sentinels: list[Proc]
    sentinel_ports: list[int]

    def url(self, db: int) -> str:
        """The ``sentinel://`` URL listing every sentinel, as Celery and kombu take it."""
        return ";".join(f"sentinel://127.0.0.1:{p}/{db}" for p in self.sentinel_ports)

    def current_master(self) -> int | None:
        """The port the sentinels now name for the master (None when no sentinel answers)."""
        for port in self.sentinel_ports:
            master = sentinel_view(port, self.master_name)
            if master is not None:
                return int(str(master["address"]).rsplit(":", 1)[1])
        return None

    def procs(self) -> list[Proc]:
        return [self.master, self.replica, *self.sentinels]


def start_sentinel_set(
    log_dir: Path, master_name: str = "mymaster", down_after_ms: int = 1000, failover_timeout_ms: int = 5000
) -> SentinelSet:
    """Start a master, a replica of it and three redis-sentinels (quorum 2), and wait until they all agree."""
    master, master_port = start_redis_server(log_dir, "sentinel-master")
    replica, replica_port = start_redis_server(
        log_dir, "sentinel-replica", "--replicaof", "127.0.0.1", str(master_port)
    )
    wait_until(lambda: _replica_synced(replica_port), 20, "the replica to sync with the master")
    sentinels, ports = [], []
    for i in range(3):
        port = free_port()
        conf = log_dir / f"sentinel-{port}.conf"
        # redis-sentinel rewrites its config file: each gets a file of its own.
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {log_dir}\n"
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {master_name} 1\n"
        )
        sentinels.append(Proc(f"sentinel-{i}-{port}", [redis_exe("redis-sentinel"), str(conf)], log_dir))
        ports.append(port)
    s = SentinelSet(master_name, master, master_port, replica, replica_port, sentinels, ports)

    def agreed() -> bool:
        for port in ports:
            master = sentinel_view(port, master_name)
            if master is None or int(master.get("sentinels", 0)) < 3 or int(master.get("slaves", 0)) < 1:
                return False
        return True

    wait_until(agreed, 30, "the three sentinels to see each other and the replica", interval=0.2)
    return s


def sentinel_view(port: int, master_name: str) -> dict[str, object] | None:
    """What one sentinel says of the master (``INFO sentinel``: address, slaves, sentinels), or None."""
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        info = client.info("sentinel")
    except redis.RedisError:
        return None
    finally:
        client.close()
    for key, value in info.items():
        if key.startswith("master") and isinstance(value, dict) and value.get("name") == master_name:
            return value
    return None


def _replica_synced(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        return client.info("replication").get("master_link_status") == "up"
    except redis.RedisError:
        return False
    finally:
        client.close()


def wait_for_failover(s: SentinelSet, old_master: int, timeout: float = 30) -> float:
    """Wait until the sentinels name another master; return how long it took."""
    started = time.monotonic()
    wait_until(
        lambda: (s.current_master() or old_master) != old_master,
        timeout,
        "Sentinel to promote the replica",
        interval=0.1,
    )
    return time.monotonic() - started
