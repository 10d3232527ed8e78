"""Built-in journal: writes every run's events to ``<run folder>/journal.sqlite`` (or ``journal.url``).

Hooks used: ``on_run_start`` (the ``runs`` row: config YAML and hash, code version,
seed, ``completed = 0``), ``on_decision`` (decision + chain snapshot + context),
``on_order_event``, ``on_fill``, ``on_trade_closed``, ``on_breaker_trip`` (the
``breaker_trips`` table), ``on_session_end`` (daily
equity) and ``on_run_end`` (``completed`` and the summary). One
:class:`~strikebench.journal.Journal` per run id, so several runs in one process
each get their own. A run with neither an output folder nor a journal URL is not
journaled.

A backtest's journal commits whole sessions (:meth:`Journal.commit_per_session`):
``on_session_end`` commits the session's events with its equity row (and the finished
sessions not committed yet) when the last commit is a quarter second old
(:meth:`Journal.session_done`), ``on_run_end`` and closing commit the rest, and so does
the interpreter's exit after an interrupted run (Ctrl-C, SIGTERM under ``strikebench
backtest``, an exception). A kill -9 loses the unfinished session and the finished ones
of the last quarter second (never part of a session). Paper and live runs commit every event (their router
journals an order before it is sent).
"""

from __future__ import annotations

import atexit
from pathlib import Path

from strikebench.hookspecs import hookimpl
from strikebench.journal import JOURNAL_FILE, JOURNAL_URL_FILE, Journal, stored_url

__all__ = ["journal_for", "open_journals", "discard"]

#: run id -> the journal that run writes to (open between its first event and on_run_end)
_journals: dict[str, Journal] = {}


def open_journals() -> dict[str, Journal]:
    """The journals currently open, by run id (read-only use; tests and tools)."""
    return dict(_journals)


def commit_all() -> None:
    """Commit what every open journal holds (the run stays incomplete); registered with atexit."""
    for journal in list(_journals.values()):
        try:
            journal.commit()
        except Exception:  # noqa: BLE001 - at exit, one journal's failure must not hide the others
            pass


atexit.register(commit_all)


def discard(run_id: str) -> None:
    """Close a run's journal without ending the run (it keeps reading as incomplete)."""
    journal = _journals.pop(run_id, None)
    if journal is not None:
        journal.close()


def _url_of(run) -> str | None:
    cfg = getattr(getattr(run, "config", None), "config", None)
    url = getattr(getattr(cfg, "journal", None), "url", None)
    if url:
        return url
    if run.output_dir:
        return str(Path(run.output_dir) / JOURNAL_FILE)
    return None


def _url_template(run) -> str | None:
    """``journal.url`` as the config wrote it when it came from the environment (``${JOURNAL_URL}``)."""
    text = getattr(getattr(run, "config", None), "resolved_text", None)
    if not text or "${" not in text:
        return None
    import yaml

    try:
        value = ((yaml.safe_load(text) or {}).get("journal") or {}).get("url")
    except (yaml.YAMLError, AttributeError):
        return None
    return value if isinstance(value, str) and "${" in value else None


def _run_fields(run) -> dict:
    resolved = run.config
    fields: dict = {"name": run.name, "mode": run.mode, "seed": run.seed, "output_dir": run.output_dir}
    if resolved is None:
        return fields
    fields["config_yaml"] = getattr(resolved, "text", None)
    fields["config_resolved"] = getattr(resolved, "resolved_text", None) or None
    fields["config_overrides"] = list(getattr(resolved, "overrides", ()) or ())
    try:
        fields["config_hash"] = resolved.config_hash
    except Exception:  # a config object without a hash: store none rather than fail the run
        fields["config_hash"] = None
    fields["config_path"] = getattr(resolved, "source_path", None)
    broker = getattr(resolved, "broker", None)
    fields["initial_cash"] = getattr(getattr(broker, "params", None), "initial_cash", None)
    strategies = []
    for rp in getattr(resolved, "strategies", ()) or ():
        params = rp.params.model_dump(mode="json") if hasattr(rp.params, "model_dump") else dict(rp.params)
        strategies.append({"id": rp.instance_id, "name": rp.entry.name, "params": params})
    fields["strategies"] = strategies
    fm = getattr(resolved, "fill_model", None)
    if fm is not None:
        fields["fill_model"] = {"name": fm.entry.name, "params": fm.params.model_dump(mode="json")}
    return fields


def journal_for(run) -> Journal | None:
    """The run's journal, opened (and its ``runs`` row written) on the run's first event."""
    journal = _journals.get(run.run_id)
    if journal is not None:
        return journal
    url = _url_of(run)
    if url is None:
        return None
    journal = Journal(url)
    try:
        journal.start_run(run.run_id, **_run_fields(run))
    except Exception:
        journal.close()
        raise
    if run.mode == "backtest":
        journal.commit_per_session()
    if run.output_dir and (journal.backend != "sqlite"
                           or Path(journal.path).resolve() != (Path(run.output_dir) / JOURNAL_FILE).resolve()):
        Path(run.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(run.output_dir) / JOURNAL_URL_FILE).write_text(stored_url(str(url), _url_template(run)) + "\n",
                                                             encoding="utf-8")
    _journals[run.run_id] = journal
    return journal


@hookimpl
def on_run_start(run):
    journal_for(run)


@hookimpl
def on_decision(run, decision, snapshot):
    journal = journal_for(run)
    if journal is not None:
        journal.record_decision(run.run_id, decision, snapshot)


@hookimpl
def on_order_event(run, order, event):
    journal = journal_for(run)
    if journal is not None:
        journal.record_order_event(run.run_id, order, event)


@hookimpl
def on_fill(run, order, fill):
    journal = journal_for(run)
    if journal is not None:
        journal.record_fill(run.run_id, order, fill)


@hookimpl
def on_trade_closed(run, trade):
    journal = journal_for(run)
    if journal is not None:
        journal.record_trade_closed(run.run_id, trade)


@hookimpl
def on_breaker_trip(run, trip):
    journal = journal_for(run)
    if journal is not None:
        journal.record_breaker_trip(run.run_id, trip)


@hookimpl
def on_session_end(run, day, equity):
    journal = journal_for(run)
    if journal is not None:
        journal.record_equity(run.run_id, day, equity)
        journal.session_done()


@hookimpl
def on_run_end(run, summary):
    journal = journal_for(run)
    if journal is None:
        return
    try:
        journal.end_run(run.run_id, summary, completed=bool(summary.get("completed", True)))
    finally:
        _journals.pop(run.run_id, None)
        journal.close()
