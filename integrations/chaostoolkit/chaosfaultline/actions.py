"""Actions: faults, partitions, reverts, traffic and scenario runs."""

import time
import uuid
from typing import Any, Dict, List, Optional

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from .api import EXPERIMENT_LABEL, call

__all__ = [
    "apply_fault",
    "partition",
    "revert_fault",
    "revert_applied",
    "revert_all",
    "start_traffic",
    "stop_traffic",
    "start_run",
]


def apply_fault(
    kind: str,
    lease: str = "60s",
    settings: Optional[Dict[str, Any]] = None,
    select: Optional[str] = None,
    on: Optional[List[str]] = None,
    all: bool = False,
    mode: Optional[str] = None,
    count: Optional[int] = None,
    percent: Optional[float] = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Applies a fault of any kind (netem, bandwidth, drop, freeze, kill, restart,
    cpu-throttle, cpu-stress, memory-pressure) with its settings as ``faultline fault apply
    KIND`` names them (``{"interface": "eth0", "loss": "100%"}``) on the agents named by
    ``on``, ``select`` (labels) or ``all``, or in a container (settings ``container`` /
    ``container_select``). The fault ends by itself when its ``lease`` (default 60s) ends,
    even if this experiment is killed; kill and restart act once and take none. Answers
    the fault (its ``id``, its parts)."""
    once = kind in ("kill", "restart")
    if not lease and not once:
        raise ActivityFailed("lease: required, e.g. 60s (the fault ends by itself then)")
    body: Dict[str, Any] = {
        "kind": kind,
        "settings": settings or {},
        "all": bool(all),
        "label": EXPERIMENT_LABEL,
        "client_request_id": uuid.uuid4().hex,
    }
    if not once:
        body["lease"] = lease
    for k, v in (("select", select), ("mode", mode), ("count", count), ("percent", percent)):
        if v is not None:
            body[k] = v
    if on:
        body["on"] = list(on)
    return call("POST", "/api/faults", configuration, secrets, body, retry=True)


def partition(
    shape: str,
    lease: str = "30s",
    select: Optional[str] = None,
    node: Optional[str] = None,
    groups: Optional[List[List[str]]] = None,
    rest: Optional[str] = None,
    container_select: Optional[List[str]] = None,
    containers: Optional[List[str]] = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Cuts agents (or containers) into groups that cannot reach each other: shape
    isolate (``node`` alone), halves, majorities-ring, bridge (``node`` reaches both
    sides) or groups (``groups``: lists of names; ``rest``: untouched or isolated).
    It ends by itself when its ``lease`` (default 30s) ends. Answers the partition (its
    ``id`` and ``cut``)."""
    if not lease:
        raise ActivityFailed("lease: required, e.g. 30s")
    body: Dict[str, Any] = {
        "shape": shape,
        "lease": lease,
        "label": EXPERIMENT_LABEL,
        "client_request_id": uuid.uuid4().hex,
    }
    for k, v in (
        ("select", select),
        ("node", node),
        ("groups", groups),
        ("rest", rest),
        ("container_select", container_select),
        ("containers", containers),
    ):
        if v is not None:
            body[k] = v
    return call("POST", "/api/partitions", configuration, secrets, body, retry=True)


def revert_fault(
    fault_id: str, configuration: Configuration = None, secrets: Secrets = None
) -> Dict[str, Any]:
    """Reverts one fault (or partition) by its id."""
    return call("DELETE", f"/api/faults/{fault_id}", configuration, secrets)


def revert_applied(
    configuration: Configuration = None, secrets: Secrets = None
) -> List[str]:
    """The rollback: reverts every fault this experiment applied (found on the controller
    by the experiment's label) and nothing else. Answers the ids reverted; a fault that
    already ended is not an error."""
    reverted = []
    for f in call("GET", "/api/faults", configuration, secrets):
        if f.get("label") == EXPERIMENT_LABEL:
            call("DELETE", f"/api/faults/{f['id']}", configuration, secrets, ok=(200, 404))
            reverted.append(f["id"])
    return reverted


def revert_all(configuration: Configuration = None, secrets: Secrets = None) -> Any:
    """Reverts every fault on the controller, this experiment's or not."""
    return call("DELETE", "/api/faults", configuration, secrets)


def start_traffic(
    target_url: str,
    rps: float,
    duration_seconds: float,
    connections: Optional[int] = None,
    timeout_seconds: Optional[float] = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Starts open-loop load from the controller to the system under test
    (http(s)://, tcp://, redis://, grpc://): ``rps`` requests per second for
    ``duration_seconds``."""
    body: Dict[str, Any] = {
        "target_url": target_url,
        "rps": rps,
        "duration_seconds": duration_seconds,
    }
    if connections is not None:
        body["connections"] = connections
    if timeout_seconds is not None:
        body["timeout_seconds"] = timeout_seconds
    return call("POST", "/api/traffic/start", configuration, secrets, body)


def stop_traffic(configuration: Configuration = None, secrets: Secrets = None) -> Dict[str, Any]:
    """Stops the controller's load; answers its figures as it ended."""
    return call("POST", "/api/traffic/stop", configuration, secrets)


def start_run(
    scenario: str,
    wait: bool = True,
    timeout_seconds: float = 3600,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Starts a faultline scenario (its YAML text) on the controller; with ``wait``,
    polls until it ends and answers the run (``state``: passed, failed, aborted, error;
    ``analysis``)."""
    run = call("POST", "/api/runs", configuration, secrets, {"scenario": scenario})
    deadline = time.monotonic() + timeout_seconds
    while wait and run.get("state") == "running":
        if time.monotonic() > deadline:
            raise ActivityFailed(f"run {run['id']} still running after {timeout_seconds} s")
        time.sleep(1)
        run = call("GET", f"/api/runs/{run['id']}", configuration, secrets)
    return run
