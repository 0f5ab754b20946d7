"""Notifications: an outbox in the store, delivered by whichever worker claims an entry.

* **Outbox.** The txn that records a run's end (or a ``missed``/``skipped``/``lost`` record,
  or a dead-man decision) also puts one entry per matching ``notify:`` entry under
  ``/cron/notify/<job>/<occurrence>/<event>.<n>``: the target and the JSON body. So an event
  exists exactly when its record does, and recording it costs the run nothing more than a
  few more ops in a txn it sends anyway.
* **Delivery.** Every worker polls the outbox; to deliver an entry it first creates
  ``/cron/notify-lock/<same suffix>`` on its session lease (``create_revision == 0``, and
  the entry still the one it read). It then tries the target up to ``MAX_TRIES`` times with
  doubling backoff, and finally, in one txn guarded by its lock, appends the result
  (delivered / failed after N tries) to the run record's ``notifications`` list, deletes
  the entry and its lock. Delivery runs in its own tasks, bounded in number, each try
  bounded in time: a slow or dead receiver never delays a run.
* **Crashes.** A worker killed while delivering leaves its lock on its lease; once the lease
  expires, another worker delivers the entry again. So delivery is exactly once when no
  delivering worker dies between the receiver's answer and the final txn, and at least
  once otherwise — the limit for any sender that cannot make its receiver's side effect and
  its own record one atomic step. The worker that *ran* the job can die at any time after
  its record txn without loss or duplication: the entry is already in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import structlog

from coord.client import Client, ClientError, Compare, KeyValue, delete, put
from scheduler.claim import RunRecord
from scheduler.keys import run_key
from scheduler.notify_model import EVENT_OF_STATUS, NotifyEntry
from scheduler.spec import JobSpec

log = structlog.get_logger("scheduler.notify")

OUTBOX: Final = "/cron/notify/"
CLAIMS: Final = "/cron/notify-lock/"
MAX_TRIES: Final = 5
BACKOFF: Final = 1.0
"""Seconds before the second try; doubled before each next one (1, 2, 4, 8 s)."""
TRY_TIMEOUT: Final = 5.0
"""Seconds one webhook request may take."""
COMMAND_TIMEOUT: Final = 30.0
"""Seconds a notify command may run before it is killed (and the try counts as failed)."""
CONCURRENCY: Final = 4
"""Deliveries one worker runs at once."""
POLL: Final = 1.0
"""Seconds between two looks at the outbox."""
TAIL: Final = 1024
"""Characters of the run's output tail a notification carries."""
SIGNATURE_HEADER: Final = "X-Raftcron-Signature"

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_POSTERS = ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="notify")
"""Webhook requests block a thread each: their own few threads, so a receiver that hangs
never takes the threads the rest of the worker uses (the loop's default executor)."""


def run_body(event: str, rec: RunRecord) -> dict[str, Any]:
    """The JSON body of a run's event: what a receiver needs to act without looking up."""
    duration = (round(rec.finished_at - rec.started_at, 3)
                if rec.started_at and rec.finished_at else None)
    return {"event": event, "job": rec.job, "occurrence": rec.occurrence,
            "run_id": rec.run_id, "status": rec.status, "exit_code": rec.exit_code,
            "attempts": rec.attempt, "duration": duration,
            "output_tail": rec.output_tail[-TAIL:], "worker": rec.worker, "host": rec.host,
            "note": rec.note, "finished_at": rec.finished_at}


def entry_ops(spec: JobSpec | None, event: str, body: dict[str, Any], where: str,
              run: str | None) -> list[Any]:
    """The outbox puts for ``event`` of ``spec``: one per ``notify:`` entry that wants it.
    ``where`` names the occasion (``<job>/<occurrence>``); ``run`` is the run record's key
    that the delivery result is written into (None: no record)."""
    if spec is None:
        return []
    ops = []
    for i, entry in enumerate(spec.notify):
        if event in entry.on:
            target = {k: v for k, v in entry.to_dict().items() if k != "on"}
            value = {"target": target, "body": body, "run": run, "created_at": time.time()}
            ops.append(put(f"{OUTBOX}{where}/{event}.{i}", _dumps(value)))
    return ops


def run_ops(spec: JobSpec | None, rec: RunRecord) -> list[Any]:
    """The outbox puts that go with writing ``rec`` (a final status), if any."""
    event = EVENT_OF_STATUS.get(rec.status)
    if event is None or spec is None or not spec.notify:
        return []
    return entry_ops(spec, event, run_body(event, rec), f"{rec.job}/{rec.occurrence}",
                     run_key(rec.job, rec.occurrence))


def signature(secret: str, body: bytes) -> str:
    """The ``X-Raftcron-Signature`` value: ``sha256=<hex HMAC-SHA256 of the body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, headers: dict[str, str]) -> None:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=TRY_TIMEOUT) as resp:  # http(s): the spec checks
        resp.read(65536)


async def send(target: dict[str, Any], body: dict[str, Any], delivery: str) -> None:
    """One try; raises with the reason when it did not succeed (non-2xx, non-zero exit,
    timeout, refused)."""
    raw = _dumps(body).encode()
    entry = NotifyEntry(on=(), webhook=target.get("webhook"), secret=target.get("secret"),
                        command=tuple(target["command"]) if target.get("command") else None)
    if entry.webhook is not None:
        headers = {"Content-Type": "application/json", "User-Agent": "raftcron",
                   "X-Raftcron-Event": str(body.get("event")),
                   "X-Raftcron-Delivery": delivery}
        if entry.secret:
            headers[SIGNATURE_HEADER] = signature(entry.secret, raw)
        await asyncio.get_running_loop().run_in_executor(
            _POSTERS, _post, entry.webhook, raw, headers)
        return
    if not entry.command:
        raise ValueError("an outbox entry with no target")
    env = dict(os.environ)
    for k, v in body.items():
        env[f"RAFTCRON_{k.upper()}"] = "" if v is None else str(v)
    env["RAFTCRON_NOTIFICATION"] = raw.decode()
    env["RAFTCRON_DELIVERY"] = delivery  # what a webhook gets as X-Raftcron-Delivery
    returncode, err = await asyncio.get_running_loop().run_in_executor(
        _POSTERS, _run_command, entry.command, raw, env)
    if returncode != 0:
        raise RuntimeError(f"command exited {returncode}: "
                           f"{err.decode(errors='replace')[-200:].strip()}")


def _run_command(argv: Sequence[str], raw: bytes, env: dict[str, str]) -> tuple[int, bytes]:
    """Run a notify command on a delivery thread: the exit code and the end of stderr.

    The body reaches stdin from a file, not a pipe: a command that exits without reading
    it must not turn its try into a failure (a write to the closed pipe raised under
    uvloop, and the retry ran the command again). CPython's own spawn (no Python code in
    the child), not the event loop's: uvloop's, asked for a new session, crashed the child
    with SIGSEGV now and then in this threaded process (`command exited -11`, a full run
    under load, session 12)."""
    with tempfile.TemporaryFile() as stdin:
        stdin.write(raw)
        stdin.seek(0)
        try:
            done = subprocess.run(list(argv), stdin=stdin, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=env, start_new_session=True,
                                  timeout=COMMAND_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"command ran over {COMMAND_TIMEOUT:.0f}s") from None
    return done.returncode, done.stderr[-4096:]


class Notifier:
    """The delivery loop of one worker. ``lease()`` is its live session lease (None while
    it has none): claims of outbox entries live on it."""

    def __init__(self, client: Client, worker: str, lease: Callable[[], int | None],
                 wanted: Callable[[], bool] = lambda: True) -> None:
        self.client = client
        self.worker = worker
        self.lease = lease
        self.wanted = wanted
        """True while some job has ``notify:`` entries; otherwise the outbox is read only
        until it is seen empty (entries of jobs since deleted are still delivered)."""
        self._pending = True
        self.busy: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0

    async def run(self) -> None:
        try:
            while True:
                if self._pending or self.wanted():
                    with contextlib.suppress(ClientError):
                        await self.scan()
                await asyncio.sleep(POLL)
        finally:
            for t in list(self.tasks):
                t.cancel()

    async def scan(self) -> None:
        """Claim what this worker can deliver now (bounded), start those deliveries."""
        lease = self.lease()
        if lease is None or len(self.busy) >= CONCURRENCY:
            return
        entries = await self.client.get(OUTBOX, prefix=True, limit=256)
        self._pending = bool(entries.kvs)
        if not entries.kvs:
            return
        held = {kv.key.decode(errors="replace")[len(CLAIMS):] for kv in (
            await self.client.get(CLAIMS, prefix=True, keys_only=True)).kvs}
        for kv in entries.kvs:
            suffix = kv.key.decode(errors="replace")[len(OUTBOX):]
            if suffix in self.busy or suffix in held:
                continue
            if len(self.busy) >= CONCURRENCY:
                break
            claim = f"{CLAIMS}{suffix}"
            res = await self.client.txn(
                [Compare.create(claim) == 0, Compare.create(kv.key) == kv.create_revision],
                [put(claim, self.worker, lease=lease)], [])
            if not res.succeeded:
                continue
            self.busy.add(suffix)
            task = asyncio.get_running_loop().create_task(
                self.deliver(suffix, kv, res.revision, lease), name=f"notify:{suffix}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def deliver(self, suffix: str, kv: KeyValue, claimed: int, lease: int) -> None:
        try:
            await self._deliver(suffix, kv, claimed, lease)
        except Exception:  # a bad entry must not stop the loop
            log.exception("notify.crashed", entry=suffix)
        finally:
            self.busy.discard(suffix)

    async def _deliver(self, suffix: str, kv: KeyValue, claimed: int, lease: int) -> None:
        try:
            entry = json.loads(kv.value)
            target, body = dict(entry["target"]), dict(entry["body"])
            run = entry.get("run")
        except (ValueError, KeyError, TypeError) as err:
            log.error("notify.bad_entry", entry=suffix, error=str(err))
            await self._settle(suffix, kv, claimed, None, None)
            return
        error = ""
        tries = 0
        for tries in range(1, MAX_TRIES + 1):
            if self.lease() != lease:
                # Our session is gone, and with it the claim: another worker delivers.
                log.warning("notify.abandoned", entry=suffix, reason="session lost")
                return
            try:
                await send(target, body, suffix)
                error = ""
                break
            except Exception as err:  # noqa: BLE001 - any failure of a try is retried
                error = f"{type(err).__name__}: {err}"
                log.warning("notify.try_failed", entry=suffix, attempt=tries, error=error)
            if tries < MAX_TRIES:
                await asyncio.sleep(BACKOFF * 2 ** (tries - 1))
        result = {"event": body.get("event"), "target": target.get("webhook")
                  or list(target.get("command") or ()), "result": "failed" if error
                  else "delivered", "tries": tries, "error": error, "worker": self.worker,
                  "at": time.time()}
        if not error:
            self.delivered += 1
        (log.error if error else log.info)("notify.done", entry=suffix, result=result["result"],
                                           tries=tries, error=error)
        await self._settle(suffix, kv, claimed, run if isinstance(run, str) else None, result)

    async def _settle(self, suffix: str, kv: KeyValue, claimed: int, run: str | None,
                      result: dict[str, Any] | None) -> None:
        """Write the result into the run record, delete the entry and our claim: one txn,
        guarded by the claim still being ours (else another worker owns the entry now)."""
        claim = f"{CLAIMS}{suffix}"
        delay = 0.2
        for _ in range(20):
            try:
                compare = [Compare.create(claim) == claimed]
                ops = [delete(kv.key), delete(claim)]
                if run is not None and result is not None:
                    cur = await self.client.get(run)
                    if cur.kvs:
                        rec_kv = cur.kvs[0]
                        data = json.loads(rec_kv.value)
                        if isinstance(data, dict):
                            got = data.get("notifications")
                            data["notifications"] = [*(got if isinstance(got, list) else []),
                                                     result]
                            compare.append(Compare.mod(run) == rec_kv.mod_revision)
                            ops.append(put(run, _dumps(data)))
                res = await self.client.txn(compare, ops, [])
                if res.succeeded:
                    return
                mine = await self.client.get(claim)
                if not mine.kvs or mine.kvs[0].create_revision != claimed:
                    return  # our claim went with our session: another worker has it
            except (ClientError, ValueError) as err:
                log.warning("notify.settle_retry", entry=suffix, error=str(err))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
