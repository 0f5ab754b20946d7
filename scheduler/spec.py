"""Job files (YAML) → validated, immutable :class:`JobSpec` values.

A job file is a mapping with one key, ``jobs:``, holding a list of job mappings (keys
starting with ``x-`` are ignored: a place for YAML anchors that jobs merge with ``<<:``). The loader
works on YAML *nodes* (``yaml.compose``), so every problem names the file, line and column of
the value at fault, the job and the field, and says what is allowed::

    jobs.yaml:12:18: job "backup": field "concurrency": must be one of forbid, allow,
    replace (got "sometimes")

(one line in real output)

Every problem in a file is collected and raised together as one :class:`SpecError`; a file
with any invalid job yields no jobs at all, so a caller never applies half a file.

Invariants of a ``JobSpec``: every field holds a validated value; ``name`` is safe as one
segment of a store key; ``to_json()`` is canonical (sorted keys, no whitespace, durations in
whole seconds), so equal specs give equal bytes, and ``spec_from_json(s.to_json()) == s``.

Defaults: timezone ``UTC``, env ``{}``, inherit_env ``[PATH, LANG, LC_*, TZ]``, user none (the
worker's own), workdir none (the worker's directory), timeout none, retries 0, retry_backoff
10s, concurrency ``forbid``, starting_deadline 60s, on_lost ``record``, tags ``{}``,
history_limit 20, suspend false.
"""

from __future__ import annotations

from scheduler.errors import SpecError, SpecProblem
from scheduler.spec_load import gc_paused, load_jobs, load_jobs_text, spec_from_json
from scheduler.spec_model import DEFAULT_INHERIT_ENV, DEFAULTS, FIELDS, NAME_RE, JobSpec

__all__ = [
    "DEFAULTS",
    "DEFAULT_INHERIT_ENV",
    "FIELDS",
    "NAME_RE",
    "JobSpec",
    "SpecError",
    "SpecProblem",
    "gc_paused",
    "load_jobs",
    "load_jobs_text",
    "spec_from_json",
]
