"""The controller's Web API, as the activities call it."""

import os
import uuid
from typing import Any, Dict, Optional

import requests
from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

__all__ = ["call", "EXPERIMENT_LABEL"]

# Every fault this process applies carries this label, so the rollback finds exactly the
# experiment's faults on the controller, even one whose answer was lost on the way back.
EXPERIMENT_LABEL = "chaostoolkit-" + uuid.uuid4().hex[:12]

# Well inside the Web API's own 30 s per request.
TIMEOUT = 35


def _settings(configuration: Configuration, secrets: Secrets):
    configuration = configuration or {}
    url = configuration.get("faultline_url") or os.environ.get("FAULTLINE_URL")
    if not url:
        raise ActivityFailed(
            "faultline_url: set it in the experiment's configuration (the controller's Web API, e.g. https://10.0.0.1:5050)"
        )
    token = None
    for scope in (secrets or {}).values():
        if isinstance(scope, dict) and scope.get("faultline_token"):
            token = scope["faultline_token"]
    if token is None and isinstance(secrets, dict):
        token = secrets.get("faultline_token")
    ca = configuration.get("faultline_ca_file")
    return url.rstrip("/"), token, (ca if ca else True)


def call(
    method: str,
    path: str,
    configuration: Configuration = None,
    secrets: Secrets = None,
    body: Optional[Dict[str, Any]] = None,
    ok=(200, 201),
    retry: bool = False,
) -> Any:
    """One call; a status outside ``ok`` fails the activity with the API's own message
    (which names the field). ``retry``: once more after a connection failure, for calls
    that are safe to repeat (those carrying a client_request_id)."""
    url, token, verify = _settings(configuration, secrets)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    for attempt in (1, 2):
        try:
            r = requests.request(
                method,
                url + path,
                json=body,
                headers=headers,
                verify=verify,
                timeout=TIMEOUT,
            )
            break
        except requests.ConnectionError as e:
            if not retry or attempt == 2:
                raise ActivityFailed(f"faultline controller {url}: {e}")
    if r.status_code not in ok:
        try:
            err = r.json()["error"]
            message = err.get("message", r.text)
        except Exception:
            message = r.text[:300]
        raise ActivityFailed(f"faultline: {method} {path}: {r.status_code}: {message}")
    if r.status_code == 204 or not r.content:
        return None
    return r.json()
