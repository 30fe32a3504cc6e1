"""The OpenAPI document, refined with what is served: model names, columns, versions.

FastAPI derives the document from the routes; :func:`describe_models` fills in
the served models on every call (an alias moved to a version with other columns
shows), so a client, a generated SDK or a fuzzer knows what a valid request is.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any, Dict, List

from sparkml_aiaas.serving import oip
from sparkml_aiaas.serving.models import ModelManager
from sparkml_aiaas.serving.rest_v1 import PredictRequest
from sparkml_aiaas.serving.rest_v2 import InferRequest
from sparkml_aiaas.serving.validation import NUMERIC_TYPES

__all__ = ["describe_models"]


def describe_models(base: Dict[str, Any], manager: ModelManager,
                    max_records: int) -> Dict[str, Any]:
    """``base`` (FastAPI's OpenAPI document) with the served models filled in."""
    schema = copy.deepcopy(base)
    _path_parameters(schema, manager)
    _describe_v1(schema, manager, max_records)
    _describe_v2(schema, manager, max_records)
    return schema


def _path_parameters(schema: Dict[str, Any], manager: ModelManager) -> None:
    """``{name}`` lists the served names; ``{version}`` the versions loaded."""
    names = sorted(manager.models)
    versions = sorted({str(s.version) for s in manager.models.values() if s.version is not None})
    choices = {"name": (names, "a model served here"),
               "version": (versions, "the version served (the only one)")}
    for path, item in schema.get("paths", {}).items():
        if not path.startswith(("/v1/models/", "/v2/models/")):
            continue
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                choice = choices.get(parameter.get("name"))
                if parameter.get("in") == "path" and choice and choice[0]:
                    parameter["schema"] = {"type": "string", "enum": choice[0],
                                           "title": parameter["name"].title()}
                    parameter["description"] = choice[1]


def _value_schema(expected: str) -> Dict[str, Any]:
    """The JSON Schema of the values :mod:`.validation` accepts for a Spark SQL type."""
    if expected in NUMERIC_TYPES or expected.startswith("decimal"):
        accepted: Dict[str, Any] = {"type": "number"}
    elif expected == "boolean":
        accepted = {"anyOf": [{"type": "boolean"}, {"type": "number"}]}
    elif expected == "string":
        accepted = {"type": "string"}
    elif expected.startswith("array") or expected == "vector":
        accepted = {"type": "array", "items": {"type": "number"}}
    else:
        return {"description": f"{expected} (not checked)"}
    return {"anyOf": [accepted, {"type": "null"}],
            "description": f"{expected}; null gives NaN outputs"}


def _example_value(expected: str) -> Any:
    if expected == "string":
        return "a"
    if expected == "boolean":
        return True
    if expected.startswith("array") or expected == "vector":
        return [0.0]
    return 0.0


def _describe_v1(schema: Dict[str, Any], manager: ModelManager, max_records: int) -> None:
    """The predict body's (``PredictRequest``) records are the loaded models' signatures
    (columns, JSON types, required; ``Record_<name>`` components), at most ``max_records``."""
    names = sorted(manager.models)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    records, examples = [], []
    for name in names:
        served = manager.models[name]
        if not served.signature:
            continue  # not loaded: its columns are unknown
        key = "Record_" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        components[key] = {
            "type": "object", "title": f"{name} record",
            "description": f"one row for {name} (version {served.version}); other fields "
                           "are ignored",
            "properties": {c["name"]: _value_schema(c["type"]) for c in served.signature},
            "required": [c["name"] for c in served.signature],
            "additionalProperties": True}
        records.append({"$ref": f"#/components/schemas/{key}"})
        examples.append([{c["name"]: _example_value(c["type"]) for c in served.signature}])
    request = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    items: Dict[str, Any] = {"type": "object", "additionalProperties": True}
    if records:
        items = records[0] if len(records) == 1 else {"anyOf": records}
    request["properties"]["records"].update(items=items, maxItems=max_records)
    if examples:  # a valid body for each loaded model (vectors' lengths are not declared)
        request["properties"]["records"]["examples"] = examples
    predict = schema.get("paths", {}).get("/v1/models/{name}/predict", {}).get("post")
    if predict is not None:
        predict["requestBody"]["content"]["application/json"]["schema"] = request


def _request_example(served) -> Dict[str, Any]:
    """A valid infer body for ``served``: one row (a vector of unknown width: one item)."""
    tensors = []
    for tensor in oip.model_metadata(served)["inputs"]:
        shape = [1 if size < 0 else size for size in tensor["shape"]]
        value = {"BOOL": True, "BYTES": "a", "INT64": 0}.get(tensor["datatype"], 0.0)
        tensors.append(dict(tensor, shape=shape, data=[value] * math.prod(shape)))
    return {"inputs": tensors}


def _describe_v2(schema: Dict[str, Any], manager: ModelManager, max_records: int) -> None:
    """The infer body (``InferRequest``, its parts as components): input and output names
    are the loaded models' columns, with one valid request per model as examples."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    request = InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(request.pop("$defs", {}))
    loaded = [manager.models[n] for n in sorted(manager.models)
              if manager.models[n].predictor is not None]
    inputs = sorted({c["name"] for s in loaded for c in s.signature})
    outputs = sorted({c["name"] for s in loaded for c in s.outputs})
    if inputs:
        components["RequestInput"]["properties"]["name"]["enum"] = inputs
        components["RequestInput"]["properties"]["shape"].update(
            minItems=1, maxItems=2, items={"type": "integer", "minimum": 0,
                                           "maximum": max_records})
    if outputs:
        components["RequestOutput"]["properties"]["name"]["enum"] = outputs
    examples: List[Dict[str, Any]] = [_request_example(s) for s in loaded]
    if examples:
        request["examples"] = examples
    components["InferRequest"] = request
