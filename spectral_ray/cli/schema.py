"""``spectral-ray schema``: the sweep file's JSON Schema, from the pydantic models, for editors
(e.g. a ``# yaml-language-server: $schema=sweep.schema.json`` line) and checks in CI."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("schema", help="print the sweep file's JSON Schema",
                       description="Print the JSON Schema of a sweep file (built from the pydantic models that "
                       "`validate` uses), so editors complete and check sweep files. `validate` checks more "
                       "(names, combinations, paths) than a schema can say.")
    p.add_argument("--out", type=Path, default=None, help="write it to this file instead of stdout")
    p.set_defaults(func=run)


def sweep_schema() -> dict:
    """The JSON Schema of a sweep file; ``params`` lists every TrialConfig key and recipe key, each
    a fixed value or one of the search spaces."""
    from spectral_ray.config import SPACE_KINDS, SweepFile, TrialConfig, _allowed_keys

    schema = SweepFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    space = {"type": "object", "minProperties": 1, "maxProperties": 1,
             "properties": {kind: {"type": "array"} for kind in SPACE_KINDS}, "additionalProperties": False}
    described = {k: f.description for k, f in TrialConfig.model_fields.items() if f.description}
    params = {"type": "object", "description": "TrialConfig keys (dotted pretrain.*/finetune.* recipe keys too): a "
              "fixed value, or {grid|choice|uniform|loguniform|cases: [...]}; any name with {cases: [...]}",
              "properties": {k: {"description": described.get(k, ""), "anyOf": [space, {}]} for k in _allowed_keys()},
              "additionalProperties": {"type": "object", "required": ["cases"], "properties": {"cases": {"type": "array"}}}}
    schema["properties"]["params"] = params
    return schema


def run(args) -> int:
    text = json.dumps(sweep_schema(), indent=2)
    if args.out:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0
