"""Write config.example.yaml from the config model: every key, its default and its description.

Run ``python -m albumd.daemon.config_example > config.example.yaml`` after changing a setting; a test
checks the file is current.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel

from .config import Config

HEADER = """\
# albumd configuration: every setting with its default.
# Location: --config PATH, else $ALBUMD_CONFIG, else /etc/albumd/config.yaml, else ./config.yaml.
# Every key can be overridden from the environment: ALBUMD_<KEY>, nested with __
# (e.g. ALBUMD_WATCHER__STABLE_S=10, ALBUMD_PIPELINE__TONE__ENABLED=false). Values are read as YAML.
"""
REQUIRED_EXAMPLES = {
    "inbox": "/srv/photos/inbox",
    "archive": "/srv/photos/archive",
    "state_dir": "/var/lib/albumd",
}


def render() -> str:
    return HEADER + "\n" + "".join(_section(Config, 0, REQUIRED_EXAMPLES))


def _section(model: type[BaseModel], indent: int, values: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    pad = "  " * indent
    defaults = {}
    for name, field in model.model_fields.items():
        if not field.is_required():
            defaults[name] = field.get_default(call_default_factory=True)
    for name, field in model.model_fields.items():
        if field.description:
            lines.append(f"{pad}# {field.description}\n")
        annotation = field.annotation
        value = values.get(name, defaults.get(name))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{pad}{name}:\n")
            lines.extend(_section(annotation, indent + 1, {}))
            continue
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        lines.append(f"{pad}{name}: {_yaml_value(value)}\n")
    return lines


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, default=str)


if __name__ == "__main__":
    sys.stdout.write(render())
