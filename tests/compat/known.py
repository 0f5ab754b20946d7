"""Documented differences from etcd (FINDINGS.md F7, F11), checked precisely.

A known difference must not turn any failure into an expected one: the test says which
command first answers differently and what coord answers instead, and only that
mismatch counts. ``expect_known`` raises :class:`KnownDifference` for it, which the
test's ``xfail(raises=KnownDifference, strict=True)`` expects; any other mismatch (a
different command, a different answer) is raised as the ``CompatMismatch`` it is, and a
fixture failure (a missing etcd under ``CI=true``) is not ``KnownDifference`` either, so
neither becomes an XFAIL. If coord comes to agree with etcd, the strict marker XPASSes
and fails, which says the marker should go.
"""

from __future__ import annotations

from tests.compat.harness import Case, CompatMismatch, on_coord, render_diff


class KnownDifference(Exception):
    """A case differed from etcd exactly as its FINDINGS entry documents."""


def steps(transcript: str) -> list[tuple[str, str]]:
    """A transcript split into (command line, everything recorded up to the next one)."""
    out: list[tuple[str, str]] = []
    for line in transcript.splitlines():
        if line.startswith("$ "):
            out.append((line, ""))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + line + "\n")
    return out


def first_difference(case: Case) -> tuple[str, str, str] | None:
    """(command, etcd's record of it, the target's) for the first step that differs, or
    None if the transcripts are equal."""
    ref, target = (steps(t) for t in case.transcripts())
    for (cmd_r, out_r), (cmd_t, out_t) in zip(ref, target, strict=False):
        if (cmd_r, out_r) != (cmd_t, out_t):
            return cmd_t, out_r, out_t
    if len(ref) != len(target):
        return "<one transcript has more steps>", "", ""
    return None


def expect_known(case: Case, finding: str, command: str, coord_says: str) -> None:
    """Call at the end of a case's ``with`` block. On coord: the first step that differs
    must be ``command`` (a prefix of its command line) with ``coord_says`` in coord's
    answer and not in etcd's; then raise :class:`KnownDifference`. Equal transcripts
    return (the case then passes, and a strict xfail reports the XPASS). Against a
    second etcd (``COMPAT_TARGET=etcd``) nothing is expected: the case compares as usual."""
    if not on_coord():
        return
    diff = first_difference(case)
    if diff is None:
        return
    cmd, ref_out, coord_out = diff
    if not cmd.startswith(f"$ {command}") or coord_says not in coord_out or coord_says in ref_out:
        ref, target = case.transcripts()
        raise CompatMismatch(
            f"not the documented difference {finding} (expected {command!r} to answer "
            f"{coord_says!r} on coord); the first difference is at {cmd!r}:\n"
            + render_diff(case.name, case.pair.ref.label, ref, case.pair.target.label, target))
    raise KnownDifference(f"{finding}: {cmd} -> {coord_says}")
