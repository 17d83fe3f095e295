"""botocore's own service models, read at run time (pure: it reads botocore's data files).

Every protocol, operation, URI, member location and shape the endpoint knows
comes from here, never from a hand-copied shape: ``service(name)`` is the
``botocore.model.ServiceModel`` of ``name`` (the newest API version botocore
ships, exactly what boto3's client of the same installation uses), loaded once
and cached.  ``SERVICES`` are the services the endpoint serves, by signing name
(the service of a SigV4 credential scope).
"""

from __future__ import annotations

from functools import cache, lru_cache

from botocore.loaders import Loader
from botocore.model import ServiceModel, StructureShape

SERVICES = ("lambda", "ec2", "sts")


@lru_cache(maxsize=1)
def _loader() -> Loader:
    return Loader()


@cache
def service(name: str) -> ServiceModel:
    """The service model botocore ships for ``name`` ("lambda", "ec2", "sts"...), cached."""
    data = _loader().load_service_model(name, "service-2")
    return ServiceModel(data, service_name=name)


@cache
def operation_names(model: ServiceModel) -> frozenset[str]:
    """The operations of ``model`` (a set, for membership tests)."""
    return frozenset(model.operation_names)


@cache
def error_shapes(model: ServiceModel) -> dict[str, StructureShape]:
    """``model``'s modelled error shapes by wire code and by shape name."""
    shapes: dict[str, StructureShape] = {}
    for shape in model.error_shapes:
        shapes[shape.name] = shape
        shapes[shape.metadata.get("error", {}).get("code", shape.name)] = shape
    return shapes
