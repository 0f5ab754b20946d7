"""Total decoding of what the scheduler reads under ``/cron/``.

Anyone who can write to the store can put any bytes there: JSON nested 100,000 deep (which
``json.loads`` answers with ``RecursionError``), a value that is not an object, a key that
is not UTF-8, a job stored under another job's name. None of that may stop a view: every
decoder here raises only :class:`BadValue` (a ``ValueError``), and :func:`report_bad` logs
each bad key once (per version of its value) before the caller skips it.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from scheduler import keys
from scheduler.errors import SpecError
from scheduler.spec import JobSpec, spec_from_json

log = structlog.get_logger("scheduler.decode")

REPORTED_MAX = 10_000
"""Bad (key, revision) pairs remembered so each is logged once; forgotten all at once
beyond this, so a flood of bad keys costs bounded memory (and is logged again)."""
_reported: set[tuple[bytes, int]] = set()


class BadValue(ValueError):
    """A key or value under ``/cron/`` that the scheduler cannot understand."""


def report_bad(key: bytes, revision: int, why: str, view: str = "") -> None:
    """Log a bad key once per version (``revision`` = its mod revision), at warning."""
    seen = (bytes(key[:512]), revision)
    if seen in _reported:
        return
    if len(_reported) >= REPORTED_MAX:
        _reported.clear()
    _reported.add(seen)
    log.warning("store.bad_key", key=key[:200].decode(errors="replace"), revision=revision,
                view=view, error=why[:500])


def loads(raw: bytes | str) -> Any:
    """``json.loads`` that raises only :class:`BadValue` (bad UTF-8, bad JSON, nesting too
    deep for the parser)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError, TypeError) as err:
        raise BadValue(f"invalid JSON: {type(err).__name__}: {str(err)[:200]}") from None


def json_object(raw: bytes | str) -> dict[str, Any]:
    data = loads(raw)
    if not isinstance(data, dict):
        raise BadValue(f"expected a JSON object, got {type(data).__name__}")
    return data


def decode_spec(key: bytes, raw: bytes) -> JobSpec:
    """The job spec stored at ``/cron/jobs/<name>``. The key is the name: a spec whose
    ``name`` differs from its key is invalid (else a job stored under ``innocent`` could
    run as ``ghost`` and outlive the deletion of its key)."""
    name = keys.job_from(key, keys.JOBS)
    if name is None:
        raise BadValue("the key is not /cron/jobs/<valid job name>")
    try:
        spec = spec_from_json(raw, source=key.decode())
    except SpecError as err:
        raise BadValue(str(err)) from None
    except RecursionError:
        raise BadValue("invalid JSON: nested too deep") from None
    if spec.name != name:
        raise BadValue(f'the spec\'s name "{spec.name}" is not its key\'s "{name}"')
    return spec


def worker_tags(raw: bytes) -> dict[str, str]:
    """The tags of a ``/cron/workers/`` value; raises :class:`BadValue`."""
    tags = json_object(raw).get("tags", {})
    if not isinstance(tags, dict):
        raise BadValue("tags is not an object")
    return {str(k): str(v) for k, v in tags.items()}
