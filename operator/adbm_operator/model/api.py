"""The BackendService API's names, and the value formats its fields share with Kubernetes."""

from __future__ import annotations

GROUP = "adbm.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "BackendService"
PLURAL = "backendservices"
SINGULAR = "backendservice"
SHORT_NAMES = ("bsvc",)

# Patterns shared with Kubernetes' own validation, so a value accepted here is accepted there.
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
# Kubernetes' quantity grammar, without a sign: resources are never negative. The pattern is the
# validator; `validation.quantity_value` only computes the value of a valid one (as
# `kubernetes.utils.parse_quantity` does, which takes `1 Gi` and `NaN` too).
QUANTITY = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?[0-9]+))?$"
)
# Prometheus duration as the prometheus-operator CRDs validate it, less its bare `0` (a zero
# interval is caught by a rule: it would silently fall back to Prometheus' global default).
PROM_DURATION = (
    r"^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$"
)
SQL_IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"
# A custom Postgres setting must be namespaced: `prefix.name`.
PG_CUSTOM_SETTING = r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$"
API_VERSION_NAME = r"^v[1-9][0-9]{0,2}$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A label key: optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
