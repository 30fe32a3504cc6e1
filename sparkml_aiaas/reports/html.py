"""One self-contained HTML run report (PNG plots embedded as base64 data URIs).

The file has no external references, so it can be mailed or attached to a
ticket as is.  Every piece of text (metric names, config values, captions,
paths) goes through :func:`html.escape`; the file is written under a
temporary name and renamed into place.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

from sparkml_aiaas.atomic import atomic_file

__all__ = ["write_report"]

_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em;
       color: #222; max-width: 1100px; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: left; }
td.num { text-align: right; font-family: monospace; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figcaption { font-size: 0.9em; color: #555; }
img { max-width: 100%; border: 1px solid #eee; }
"""

Section = Union[Tuple[str, Any], Mapping[str, Any]]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _table(rows: Mapping[str, Any]) -> str:
    body = "".join(
        f"<tr><th>{_e(k)}</th><td class=\"num\">{_e(_format_value(v))}</td></tr>"
        for k, v in rows.items())
    return f"<table>{body}</table>"


def _section_body(content: Any) -> str:
    """A dict renders as a table, a str as preformatted text, anything else as JSON."""
    if isinstance(content, Mapping) and all(
            not isinstance(v, (Mapping, list, tuple)) for v in content.values()):
        return _table(content)
    if isinstance(content, str):
        return f"<pre>{_e(content)}</pre>"
    return f"<pre>{_e(json.dumps(content, indent=2, sort_keys=True, default=str))}</pre>"


def _png_data_uri(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode("ascii")


def write_report(directory: str, title: str, metrics: Mapping[str, Any],
                 plots: Sequence[Tuple[str, str]] = (),
                 sections: Optional[Iterable[Section]] = None,
                 config: Any = None, model_path: Optional[str] = None,
                 started_at: Optional[_dt.datetime] = None,
                 finished_at: Optional[_dt.datetime] = None,
                 filename: str = "report.html") -> str:
    """Write ``directory/report.html`` and return its absolute path.

    Parameters
    ----------
    metrics:
        name → value, shown as a table.
    plots:
        ``(caption, png_path)`` pairs; each PNG is embedded as a base64 data URI
        (a missing file is listed as missing instead of failing the report).
    sections:
        extra ``(heading, content)`` pairs (or a mapping heading → content): a flat
        dict renders as a table, a string as preformatted text, anything else as JSON.
    config:
        the job configuration used (a pydantic model, dict or str), shown as JSON.
    model_path, started_at, finished_at:
        shown in the run table; ``finished_at`` defaults to now (UTC).
    """
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    finished_at = finished_at or _dt.datetime.now(_dt.timezone.utc)
    run: Dict[str, Any] = {}
    if model_path:
        run["model path"] = model_path
    if started_at:
        run["started"] = started_at.isoformat(timespec="seconds")
    run["finished"] = finished_at.isoformat(timespec="seconds")
    if started_at:
        run["seconds"] = round((finished_at - started_at).total_seconds(), 1)

    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{_e(title)}</h1>", "<h2>Run</h2>", _table(run),
             "<h2>Metrics</h2>", _table(dict(metrics)) if metrics else "<p>no metrics</p>"]
    if plots:
        parts.append("<h2>Plots</h2>")
        for caption, png in plots:
            if png and os.path.exists(png):
                parts.append(f"<figure><img src=\"{_png_data_uri(png)}\" alt=\"{_e(caption)}\">"
                             f"<figcaption>{_e(caption)}</figcaption></figure>")
            else:
                parts.append(f"<p>{_e(caption)}: plot missing ({_e(png)})</p>")
    if sections:
        items = sections.items() if isinstance(sections, Mapping) else sections
        for heading, content in items:
            parts.append(f"<h2>{_e(heading)}</h2>{_section_body(content)}")
    if config is not None:
        if hasattr(config, "model_dump"):
            config = config.model_dump(mode="json", by_alias=True)
        parts.append("<h2>Configuration</h2>" + _section_body(
            config if not isinstance(config, Mapping) or any(
                isinstance(v, (Mapping, list, tuple)) for v in config.values())
            else dict(config)))
    parts.append("</body></html>\n")

    path = os.path.join(directory, filename)
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path
