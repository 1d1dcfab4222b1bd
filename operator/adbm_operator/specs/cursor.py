"""The Secret with the key that signs the service's pagination cursors: one per BackendService.

Only its shape is rendered here. The operator fills in the value when it creates the Secret,
which it does only when the Secret is absent, and it never updates it: the key stays the same
across reconciles and restarts (cursors already handed out stay valid), and a user who replaces
the Secret (to rotate the key, or to share one across BackendServices) keeps what they wrote.
The pods read it as `ADBM_CURSOR_SECRET`; its resourceVersion is in the `checksum/secrets`
annotation like every Secret the pods read, so a replacement rolls them.
"""

from __future__ import annotations

from typing import Any

from adbm_operator.model import BackendService, SecretKeyRef
from adbm_operator.specs import labels

KEY = "secret"
COMPONENT = "cursor-key"
# Random bytes behind the key; the service needs at least 32.
RANDOM_BYTES = 48
GENERATED_ANNOTATION = "adbm.io/generated"
GENERATED_NOTE = (
    f"data.{KEY} is {RANDOM_BYTES} random bytes (URL-safe base64 text) that the operator"
    " generates when it creates this Secret; it never changes it: replace the Secret to rotate"
)


def name(obj: BackendService) -> str:
    return labels.child_name(obj, "cursor")


def ref(obj: BackendService) -> SecretKeyRef:
    return SecretKeyRef(name=name(obj), key=KEY)


def secret(obj: BackendService) -> dict[str, Any]:
    """The Secret as the operator creates it, without its value."""
    meta = labels.metadata(obj, name(obj), COMPONENT)
    meta["annotations"] = {GENERATED_ANNOTATION: GENERATED_NOTE}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque"}
