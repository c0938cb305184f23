"""Probes: faults, agents, traffic and runs as the controller sees them, and faultline
probes (http, tcp, redis, prometheus) asked by the controller."""

from typing import Any, Dict, List, Optional

from chaoslib.types import Configuration, Secrets

from .api import EXPERIMENT_LABEL, call

__all__ = [
    "active_faults",
    "experiment_faults",
    "agents",
    "agents_healthy",
    "traffic",
    "run",
    "run_state",
    "probe",
    "probe_passes",
]


def active_faults(configuration: Configuration = None, secrets: Secrets = None) -> List[Dict[str, Any]]:
    """Every fault active on the controller."""
    return call("GET", "/api/faults", configuration, secrets)


def experiment_faults(configuration: Configuration = None, secrets: Secrets = None) -> int:
    """How many faults this experiment applied are still active (0 after its rollbacks)."""
    return sum(1 for f in active_faults(configuration, secrets) if f.get("label") == EXPERIMENT_LABEL)


def agents(configuration: Configuration = None, secrets: Secrets = None) -> List[Dict[str, Any]]:
    """The controller's agents: name, labels, health, capabilities."""
    return call("GET", "/api/agents", configuration, secrets)


def agents_healthy(
    names: Optional[List[str]] = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """Whether every agent (or every one of ``names``) is known and healthy."""
    known = {a["name"]: a.get("healthy", False) for a in agents(configuration, secrets)}
    wanted = names if names else list(known)
    return bool(wanted) and all(known.get(n, False) for n in wanted)


def traffic(
    last: Optional[int] = None, configuration: Configuration = None, secrets: Secrets = None
) -> Dict[str, Any]:
    """The controller's load: its state and per-second figures (``last``: only the latest
    N seconds)."""
    path = "/api/traffic" + (f"?last={int(last)}" if last else "")
    return call("GET", path, configuration, secrets)


def run(run_id: str, configuration: Configuration = None, secrets: Secrets = None) -> Dict[str, Any]:
    """A scenario run: its state and, once ended, its analysis."""
    return call("GET", f"/api/runs/{run_id}", configuration, secrets)


def run_state(run_id: str, configuration: Configuration = None, secrets: Secrets = None) -> str:
    """A run's state: running, passed, failed, aborted or error."""
    return run(run_id, configuration, secrets)["state"]


def probe(
    kind: str,
    settings: Dict[str, Any],
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> Dict[str, Any]:
    """Asks a faultline probe once from the controller: kind http (url, status, match,
    within), tcp (address), redis (address, info, match) or prometheus (url, query,
    expect, for). Answers ``{"asks", "ok", "ms", "detail"}``; a refused connection or a
    timeout is ``ok: false``, never a pass."""
    return call("POST", "/api/probes/check", configuration, secrets, {"kind": kind, "settings": settings})


def probe_passes(
    kind: str,
    settings: Dict[str, Any],
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """As ``probe``, answering only whether it passed (for a tolerance of ``true``)."""
    return bool(probe(kind, settings, configuration, secrets)["ok"])
