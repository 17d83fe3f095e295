"""SAM templates expanded to CloudFormation by samtranslator, offline (runs a library).

``expand(template, source, region="us-east-1") -> dict``: when the template's
``Transform`` names ``AWS::Serverless-2016-10-31`` (a string or in a list), the
CloudFormation template samtranslator makes of it; any other template is
returned as it is.  The input is never changed.

Offline: the translator is given a stand-in session that only knows the region
(no credentials, no endpoint is ever built), an empty managed-policy map and a
``get_managed_policy_map`` that answers ``{}`` (a policy name the translator's
bundled map does not know stays a name: no IAM ``ListPolicies``).  Nested
applications (``AWS::Serverless::Application``) would need the Serverless
Application Repository or nested stacks: they are refused, before the translator
sees them.  Note: the translator keeps the region in a class attribute
(``ArnGenerator.BOTO_SESSION_REGION_NAME``), so expansions in one process share it.

Local code: SAM wants ``CodeUri`` (and a layer's ``ContentUri``) to be S3; ``sam
build`` and ``sam package`` upload local paths first.  ``expand`` uploads nothing:
each function's effective ``CodeUri`` (its own, else ``Globals.Function.CodeUri``)
that is a string (a local path, kept exactly as written) is replaced by
``s3://hyperplane-local-code/<LogicalId>`` for the translator, which turns it into
``Code: {S3Bucket: hyperplane-local-code, S3Key: <LogicalId>}``, and the original
is recorded on the resulting ``AWS::Lambda::Function`` (same logical id) as
``Metadata.HyperplaneCodeUri`` (``CODE_URI_KEY``); a layer's under
``Metadata.HyperplaneContentUri`` of the ``AWS::Lambda::LayerVersion`` (whose
logical id the translator suffixes with a hash: the placeholder finds it).  A
``CodeUri`` given as ``{Bucket, Key}`` and ``InlineCode`` (which becomes
``Code.ZipFile``) are left to the translator.

A translator error is one ``TopologyError`` at ``Resources.<LogicalId>`` (or the
function's ``Properties.Events.<Event>``, or ``Globals``), all of its causes in the
reason.  samtranslator is imported on the first expansion (it is slow to import).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, NoReturn

from hyperplane.errors import TopologyError
from hyperplane.model.fields import kind, shown

SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
LOCAL_CODE_BUCKET = "hyperplane-local-code"
CODE_URI_KEY = "HyperplaneCodeUri"
CONTENT_URI_KEY = "HyperplaneContentUri"
_LOCAL_URIS = {"AWS::Serverless::Function": ("CodeUri", CODE_URI_KEY),
               "AWS::Serverless::LayerVersion": ("ContentUri", CONTENT_URI_KEY)}
_GLOBALS = {"AWS::Serverless::Function": "Function"}
_RESOURCE_ID = re.compile(r"Resource with id \[([^\]]+)\]")
_EVENT_ID = re.compile(r"Event with id \[([^\]]+)\]")
MAX_CAUSES = 5


class _RegionOnly:
    """Stands in for a boto3 session: the translator only reads its region."""

    def __init__(self, region: str) -> None:
        self.region_name = region


def transforms(template: dict) -> list[object]:
    raw = template.get("Transform")
    return raw if isinstance(raw, list) else [raw] if raw is not None else []


def is_sam(template: object) -> bool:
    return isinstance(template, dict) and SAM_TRANSFORM in transforms(template)


def _fail(source: str, path: str, reason: str) -> NoReturn:
    raise TopologyError(source, path, reason)


def expand(template: dict, source: str, region: str = "us-east-1") -> dict:
    """The CloudFormation template of a SAM template (see the module's docstring)."""
    if not is_sam(template):
        return template
    work = copy.deepcopy(template)
    resources = work.get("Resources")
    if not isinstance(resources, dict) or not resources:
        _fail(source, "Resources", f"expected a non-empty mapping, got {kind(resources)}")
    for logical_id, spec in resources.items():
        if isinstance(spec, dict) and spec.get("Type") == "AWS::Serverless::Application":
            _fail(source, f"Resources.{logical_id}.Type", "AWS::Serverless::Application "
                  "(nested applications from the Serverless Application Repository or "
                  "nested stacks) is not emulated")
    local = _take_local_code(work, source)
    result = _translate(work, source, region)
    _record_local_code(result, local)
    return result


def _record_local_code(result: dict, local: dict[str, tuple[str, str]]) -> None:
    """Put each original URI on the resource whose code is its placeholder (a layer's
    logical id gets a hash appended by the translator: found by its placeholder)."""
    for resource in result.get("Resources", {}).values():
        properties = resource.get("Properties") if isinstance(resource, dict) else None
        if not isinstance(properties, dict):
            continue
        for prop in ("Code", "Content"):
            code = properties.get(prop)
            if isinstance(code, dict) and code.get("S3Bucket") == LOCAL_CODE_BUCKET and \
                    code.get("S3Key") in local:
                key, uri = local[code["S3Key"]]
                metadata = resource.setdefault("Metadata", {})
                if isinstance(metadata, dict):
                    metadata[key] = uri


def _take_local_code(work: dict, source: str) -> dict[str, tuple[str, str]]:
    """Replace local code URIs by placeholders: logical id -> (metadata key, original)."""
    globals_ = work.get("Globals") if isinstance(work.get("Globals"), dict) else {}
    local: dict[str, tuple[str, str]] = {}
    for logical_id, spec in work["Resources"].items():
        if not isinstance(spec, dict) or spec.get("Type") not in _LOCAL_URIS:
            continue
        prop, key = _LOCAL_URIS[spec["Type"]]
        properties = spec.setdefault("Properties", {})
        if not isinstance(properties, dict):
            _fail(source, f"Resources.{logical_id}.Properties",
                  f"expected a mapping, got {kind(properties)}")
        if "InlineCode" in properties or "ImageUri" in properties:
            continue
        section = globals_.get(_GLOBALS.get(spec["Type"], ""))
        inherited = section.get(prop) if isinstance(section, dict) else None
        uri = properties.get(prop, inherited)
        if isinstance(uri, str) and not uri.startswith("s3://"):
            local[logical_id] = (key, uri)
            properties[prop] = f"s3://{LOCAL_CODE_BUCKET}/{logical_id}"
    for section in globals_.values():
        if isinstance(section, dict):
            for prop, _ in _LOCAL_URIS.values():
                uri = section.get(prop)
                if isinstance(uri, str) and not uri.startswith("s3://"):
                    section[prop] = f"s3://{LOCAL_CODE_BUCKET}/Globals"
    return local


def _refuse_sar() -> Any:
    raise RuntimeError("the Serverless Application Repository is not emulated")


def _translate(work: dict, source: str, region: str) -> dict:
    # samtranslator (and boto3 under it) take about a second to import: only here.
    from samtranslator.model.exceptions import (  # noqa: PLC0415
        ExceptionWithMessage,
        InvalidDocumentException,
    )
    from samtranslator.parser.parser import Parser  # noqa: PLC0415
    from samtranslator.plugins.application.serverless_app_plugin import (  # noqa: PLC0415
        ServerlessAppPlugin,
    )
    from samtranslator.translator.translator import Translator  # noqa: PLC0415

    plugins = [ServerlessAppPlugin(sar_client_creator=_refuse_sar)]
    translator = Translator({}, Parser(), plugins=plugins,
                            boto_session=_RegionOnly(region))  # type: ignore[arg-type]
    empty: Callable[[], dict[str, str]] = dict
    try:
        return translator.translate(work, parameter_values={},
                                    get_managed_policy_map=empty)
    except InvalidDocumentException as exc:
        causes = list(exc.causes) or [exc]
        _fail(source, _cause_path(causes[0], work), _reasons(causes))
    except ExceptionWithMessage as exc:
        _fail(source, _cause_path(exc, work), _reasons([exc]))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        _fail(source, "Transform", f"samtranslator could not expand the template: "
              f"{shown(str(exc))}")
    finally:
        translator.metrics.publish()  # to a dummy publisher; else a warning at exit


def _reasons(causes: list) -> str:
    texts = [str(getattr(c, "message", c))[:300] for c in causes[:MAX_CAUSES]]
    more = f" (and {len(causes) - MAX_CAUSES} more)" if len(causes) > MAX_CAUSES else ""
    return "SAM: " + " | ".join(texts) + more


def _cause_path(cause: object, work: dict) -> str:
    message = str(getattr(cause, "message", cause))
    resources = work.get("Resources", {})
    events = {(logical_id, name): f"Resources.{logical_id}.Properties.Events.{name}"
              for logical_id, spec in resources.items() if isinstance(spec, dict)
              for name in _events(spec)}
    event = _EVENT_ID.search(message)
    resource = _RESOURCE_ID.search(message)
    for (logical_id, name), path in events.items():
        if event and name == event.group(1) and (not resource or
                                                 resource.group(1) == logical_id):
            return path
        if resource and resource.group(1) == f"{logical_id}{name}" and \
                resource.group(1) not in resources:
            return path   # a resource the translator made of an event: FnTick
    if resource:
        return f"Resources.{resource.group(1)}"
    return "Globals" if "'Globals'" in message else "Transform"


def _events(spec: dict) -> list[str]:
    properties = spec.get("Properties")
    events = properties.get("Events") if isinstance(properties, dict) else None
    return [str(name) for name in events] if isinstance(events, dict) else []
