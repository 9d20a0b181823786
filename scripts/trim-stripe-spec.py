#!/usr/bin/env python3
"""Cuts Stripe's OpenAPI spec down to the operations venueql calls, with request schemas
inlined and descriptions dropped, plus the fixture objects the local Stripe answers with,
and the outline of the objects venueql reads (each property's type, enum, nullability,
the object it refers to), which the typed Stripe objects are checked against.

Usage: scripts/trim-stripe-spec.py ../shared/stripe  (writes stripe/api-subset.json and
stripe/fixtures.json). The local Stripe (src/payments/local_stripe.rs) checks every
request against the result: known path, known parameters, required ones present.
"""
import json
import re
import sys

OPERATIONS = [
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts/{account}"),
    ("post", "/v1/account_links"),
    ("post", "/v1/payment_intents"),
    ("get", "/v1/payment_intents/{intent}"),
    ("post", "/v1/payment_intents/{intent}/cancel"),
    ("post", "/v1/payment_intents/{intent}/confirm"),
    ("post", "/v1/refunds"),
    ("get", "/v1/refunds/{refund}"),
    ("get", "/v1/events/{id}"),
]
RESOURCES = ["payment_intent", "account", "account_link", "refund", "charge", "dispute", "event"]
DROP = {"description", "title", "x-stripeBypassValidation", "maxLength", "format", "x-expansionResources"}
# The objects venueql deserialises (src/payments/objects.rs), and the ones they contain.
OBJECTS = ["event", "payment_intent", "charge", "refund", "dispute", "account", "account_link",
           "transfer_data", "api_errors", "account_requirements"]


def outline(prop, schemas, required=False):
    """One property: its type, enum, nullability, whether its object must carry it, and the
    object it refers to (if any). Values listed only in the description (e.g. a refund's
    status) are kept as `mentions`."""
    out = {"nullable": bool(prop.get("nullable", False)), "required": required}
    refs = [prop] + prop.get("anyOf", [])
    for ref in refs:
        if "$ref" in ref:
            out["object"] = ref["$ref"].split("/")[-1]
        elif "type" in ref and ref is not prop:
            out["type"] = ref["type"]  # an expandable field: an id, or the object itself
    if "type" in prop:
        out["type"] = prop["type"]
    if "enum" in prop:
        out["enum"] = prop["enum"]
    if prop.get("type") == "object" and "properties" in prop:
        needed = prop.get("required", [])
        out["properties"] = {k: outline(v, schemas, k in needed) for k, v in prop["properties"].items()}
    if prop.get("type") == "array" and "$ref" in prop.get("items", {}):
        out["items"] = prop["items"]["$ref"].split("/")[-1]
    if "description" in prop and prop.get("type") == "string" and "enum" not in prop:
        out["mentions"] = sorted(set(re.findall(r"`([a-z_]+)`", prop["description"])))
    return out


def resolve(node, schemas, depth=0):
    if depth > 12:
        return {}
    if isinstance(node, dict):
        if "$ref" in node:
            return resolve(schemas[node["$ref"].split("/")[-1]], schemas, depth + 1)
        return {k: resolve(v, schemas, depth + 1) for k, v in node.items() if k not in DROP}
    if isinstance(node, list):
        return [resolve(v, schemas, depth + 1) for v in node]
    return node


def main(source):
    spec = json.load(open(f"{source}/spec3.subset-connect-payments.json"))
    schemas = spec["components"]["schemas"]
    paths = {}
    for method, path in OPERATIONS:
        op = spec["paths"][path][method]
        out = {"parameters": [
            {"name": p["name"], "in": p["in"], "required": p.get("required", False)} for p in op.get("parameters", [])
        ]}
        body = op.get("requestBody", {}).get("content", {}).get("application/x-www-form-urlencoded")
        if body:
            out["form"] = resolve(body["schema"], schemas)
        paths.setdefault(path, {})[method] = out
    objects = {
        name: {k: outline(v, schemas, k in schemas[name].get("required", [])) for k, v in schemas[name]["properties"].items()}
        for name in OBJECTS
    }
    subset = {"info": {"version": spec["info"]["version"]}, "paths": paths, "objects": objects}
    json.dump(subset, open("stripe/api-subset.json", "w"), indent=None, separators=(",", ":"), sort_keys=True)
    fixtures = json.load(open(f"{source}/fixtures3.json"))["resources"]
    json.dump({k: fixtures[k] for k in RESOURCES}, open("stripe/fixtures.json", "w"), indent=1, sort_keys=True)


main(sys.argv[1] if len(sys.argv) > 1 else "../shared/stripe")
