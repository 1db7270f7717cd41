"""Each process's metrics port: `herald run` gives every process its own and refuses settings that share one, and a
process whose port is taken stops at start naming the setting to change."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from services.common import metrics
from services.common.config import Settings
from services.supervisor import _check_ports, listening_ports
from tests.conftest import free_port


def test_herald_run_gives_every_process_its_own_port_by_default() -> None:
    ports = listening_ports(Settings(delivery_workers=3), capture=True)
    assert len(set(ports.values())) == len(ports)
    workers = [
        port for setting, port in ports.items() if setting.startswith("HERALD_DELIVERY_WORKER_METRICS_PORT")
    ]
    assert workers == [9110, 9111, 9112]
    assert {
        ports[f"HERALD_{name.upper()}_METRICS_PORT"] for name in ("campaign", "tag", "audience", "delivery")
    } == {
        9101,
        9102,
        9103,
        9104,
    }
    assert ports["HERALD_BOUNCE_RECEIVER_METRICS_PORT"] == 9105
    _check_ports(Settings(delivery_workers=3), capture=True)


def test_herald_run_refuses_two_processes_on_one_port_naming_both_settings() -> None:
    with pytest.raises(
        RuntimeError, match="HERALD_TAG_GRPC_PORT and HERALD_CAMPAIGN_METRICS_PORT both name port 50052"
    ):
        _check_ports(Settings(campaign_metrics_port=50052), capture=False)
    # Workers take consecutive ports: from 9104, the second worker's would be the bounce receiver's.
    with pytest.raises(
        RuntimeError, match=r"HERALD_BOUNCE_RECEIVER_METRICS_PORT and .*worker 2\) both name port 9105"
    ):
        _check_ports(Settings(delivery_worker_metrics_port=9104, delivery_metrics_port=9001), capture=False)


def test_a_port_of_zero_serves_no_metrics_and_takes_no_port() -> None:
    ports = listening_ports(Settings(campaign_metrics_port=0, delivery_worker_metrics_port=0), capture=False)
    assert not any("CAMPAIGN_METRICS" in setting or "WORKER_METRICS" in setting for setting in ports)


def test_a_process_serves_its_metrics_on_its_port() -> None:
    port = free_port()
    metrics.serve(Settings(tag_metrics_port=port), "tag")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert b"process_cpu_seconds_total" in response.read()


def test_a_process_whose_metrics_port_is_taken_stops_naming_the_setting() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(
            SystemExit, match=f"cannot serve metrics on 127.0.0.1:{port}.*HERALD_AUDIENCE_METRICS_PORT"
        ):
            metrics.serve(Settings(audience_metrics_port=port), "audience")
