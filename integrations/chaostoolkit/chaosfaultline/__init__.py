"""Chaos Toolkit extension for faultline.

Actions apply faults and partitions, start traffic and scenario runs; probes read the
controller's faults, agents, traffic and runs, and ask a faultline probe through the
controller. Everything goes through the controller's Web API:

- configuration ``faultline_url``: the Web API, e.g. ``https://10.0.0.1:5050``;
- configuration ``faultline_ca_file`` (optional): the CA that signed the controller's
  certificate (``ca.pem`` of ``faultline certs init``); the system's CAs otherwise;
- secret ``faultline_token`` (in any secrets scope the activity names): an operator token
  from the controller's ``web_token_file`` (a viewer token reads faults, agents, traffic
  and runs; asking a probe and every action take an operator).

Every fault an experiment applies carries a lease, so a ``chaos run`` that is killed still
leaves nothing behind once the lease ends; the rollback ``revert_applied`` reverts them at
once.
"""

from typing import List

from chaoslib.discovery.discover import (
    discover_actions,
    discover_probes,
    initialize_discovery_result,
)
from chaoslib.types import DiscoveredActivities, Discovery

__version__ = "0.1.0"
__all__ = ["__version__", "discover"]


def discover(discover_system: bool = True) -> Discovery:
    """The extension's actions and probes, for ``chaos discover``."""
    discovery = initialize_discovery_result(
        "chaostoolkit-faultline", __version__, "faultline"
    )
    discovery["activities"].extend(load_exported_activities())
    return discovery


def load_exported_activities() -> List[DiscoveredActivities]:
    activities = []
    activities.extend(discover_actions("chaosfaultline.actions"))
    activities.extend(discover_probes("chaosfaultline.probes"))
    return activities
