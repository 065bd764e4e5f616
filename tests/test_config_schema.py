"""The schema explains every setting: each property, at every level (the sections' $defs, the
entries of `recipe:` and `per_model:`, array items, oneOf/anyOf branches), has a description."""

from __future__ import annotations

import copy

from drfuse import config as config_mod

# keywords whose value is one subschema / a list of subschemas / a name -> subschema mapping
ONE = ("additionalProperties", "items", "propertyNames", "not", "if", "then", "else", "contains")
SEVERAL = ("oneOf", "anyOf", "allOf", "prefixItems")
NAMED = ("properties", "$defs", "patternProperties")


def _described(node: dict, defs: dict) -> bool:
    """A non-empty description on the node itself, or on the $def it refers to."""
    text = node.get("description")
    if not text and "$ref" in node:
        text = defs[node["$ref"].removeprefix("#/$defs/")].get("description")
    return isinstance(text, str) and bool(text.strip())


def undescribed(schema: dict) -> list[str]:
    """The paths of every property and $def without a description."""
    defs = schema.get("$defs", {})
    missing: list[str] = []

    def walk(node, path: str) -> None:
        if not isinstance(node, dict):
            return
        for key in NAMED:
            for name, child in node.get(key, {}).items():
                where = f"{path}.{name}" if key == "properties" else f"{path}{key}[{name}]"
                if isinstance(child, dict) and not _described(child, defs):
                    missing.append(where)
                walk(child, where)
        for key in ONE:
            walk(node.get(key), f"{path}<{key}>")
        for key in SEVERAL:
            for i, child in enumerate(node.get(key, [])):
                walk(child, f"{path}<{key}[{i}]>")

    walk(schema, "")
    return missing


def test_every_setting_of_the_schema_has_a_description():
    schema = config_mod.schema()
    assert len(undescribed(schema)) == 0, f"schema properties without a description: {', '.join(undescribed(schema))}"


def test_a_setting_without_a_description_is_named_wherever_it_hides():
    """The walk reaches every level: a description taken away anywhere is reported by its path."""
    schema = config_mod.schema()
    cases = {
        ("$defs", "model", "properties", "rank_gap"): "$defs[model].rank_gap",
        ("$defs", "train", "properties", "augment", "properties", "scale"): "$defs[train].augment.scale",
        (
            "$defs",
            "per_model",
            "additionalProperties",
            "properties",
            "train",
        ): "$defs[per_model]<additionalProperties>.train",
        ("properties", "container"): ".container",
        ("$defs", "probability"): "$defs[probability]",
    }
    for keys, path in cases.items():
        broken = copy.deepcopy(schema)
        node = broken
        for key in keys:
            node = node[key]
        node["description"] = " "
        assert undescribed(broken) == [path]
    # a property referring to an undescribed $def, deep in a branch of oneOf, is found too
    branched = copy.deepcopy(schema)
    branched["$defs"]["model"]["properties"]["dropout"] = {
        "oneOf": [{"type": "null"}, {"type": "object", "properties": {"p": {"$ref": "#/$defs/probability"}}}],
        "description": "either",
    }
    branched["$defs"]["probability"].pop("description")
    missing = undescribed(branched)
    assert "$defs[model].dropout<oneOf[1]>.p" in missing and "$defs[probability]" in missing
