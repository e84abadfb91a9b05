"""The trace context on the wire (gRPC metadata, NATS headers): the propagators `OTEL_PROPAGATORS`
names, as the OpenTelemetry spec says; `tracecontext,baggage` until `configure` is called.

Loaded from the entry points the propagator packages register (the group the OpenTelemetry API
loads them from), but from the mapping the service was given and with a start-up error that names
the missing package: `opentelemetry.propagate` reads `os.environ` when first imported and raises a
bare ValueError there.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from importlib.metadata import entry_points

from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator

SETTING = "OTEL_PROPAGATORS"
DEFAULT = "tracecontext,baggage"
_GROUP = "opentelemetry_propagator"
# The spec's known values whose propagator is not in opentelemetry-api, and the package with it.
_PACKAGES = {
    "b3": "opentelemetry-propagator-b3",
    "b3multi": "opentelemetry-propagator-b3",
    "jaeger": "opentelemetry-propagator-jaeger",
    "xray": "opentelemetry-propagator-aws-xray",
    "ottrace": "opentelemetry-propagator-ot-trace",
}


class PropagatorMissing(ValueError):
    """`OTEL_PROPAGATORS` names a propagator that is not installed."""


def load(value: str) -> TextMapPropagator:
    """The propagators `value` lists (comma-separated; empty: the default; `none`: none)."""
    names = [name.strip() for name in (value.strip() or DEFAULT).split(",") if name.strip()]
    if any(name.lower() == "none" for name in names):
        return CompositePropagator([])
    propagators: list[TextMapPropagator] = []
    for name in names:
        found = entry_points(group=_GROUP, name=name)
        if not found:
            package = _PACKAGES.get(name)
            hint = f"install {package}" if package else "misspelled or not installed"
            raise PropagatorMissing(f"{SETTING}: no propagator {name!r} ({hint})")
        propagators.append(next(iter(found)).load()())
    return CompositePropagator(propagators)


_propagator: TextMapPropagator = load(DEFAULT)


def configure(env: Mapping[str, str]) -> TextMapPropagator:
    """Uses the propagators `env` names from now on, in this whole process; raises
    PropagatorMissing (the setting and the package named) for one that is not installed."""
    global _propagator
    _propagator = load(env.get(SETTING, ""))
    return _propagator


def inject(carrier: MutableMapping[str, str]) -> None:
    """Adds the current span's context (and baggage) to `carrier`; nothing without a span."""
    _propagator.inject(carrier)


def extract(carrier: Mapping[str, str]) -> Context:
    """The remote context `carrier` holds (an empty one without it)."""
    return _propagator.extract(dict(carrier), context=Context())
