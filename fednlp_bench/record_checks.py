"""Strict checks for result records that come from outside a run (leaderboard, submit, verify).

:func:`fednlp_bench.record.problems` checks the schema a run writes. A record read from a
results folder or handed to ``submit`` may have been edited by anyone, so before any value
is used :func:`strict_problems` also checks, for every field the leaderboard reads:

- types and ranges: metrics within their declared range (accuracy, F1, precision, recall,
  exact match and ROUGE in [0, 1]; any other metric finite with ``|x| <= 1e9``), costs and
  counts ``>= 0``, ``seed >= 0``, rounds and clients ``>= 1``, DP epsilon ``>= 0`` and delta in
  [0, 1], ``created`` a timezone-aware ISO-8601 time not in the future (one day of clock skew
  allowed);
- names (task, dataset, model, preset, algorithm, partition method, metric and parameter keys,
  peft method, track name): at most :data:`MAX_NAME_CHARS` characters, no control, format
  (bidi overrides, zero-width), surrogate, private-use or unassigned code points, no line
  breaks, and no Latin letters mixed with Greek or Cyrillic ones (look-alikes such as a
  Cyrillic ``е`` in ``fedavg``). Names are compared after NFKC normalisation
  (:func:`normalize_names`), so full-width ``ｆｅｄａｖｇ`` *is* ``fedavg``;
- structure: nesting depth at most :data:`MAX_DEPTH`, every string at most
  :data:`MAX_STRING_CHARS` characters and valid Unicode (no lone surrogates), no control or
  format characters in any string except tab and newline in free text;
- run notes: ``metrics.failed_clients`` items ``{round, client, reason}`` with counts ``>= 0``,
  ``algorithm.deviations`` a short list of strings, ``metrics.best_val`` like the final metrics;
- consistency: for the built-in tasks, ``metrics.primary`` is the task's primary metric
  (:data:`TASK_PRIMARY`).

Every message names the field; values are quoted through :func:`safe_text`, so a message
never carries a terminal escape or a megabyte of text.
"""
from __future__ import annotations

import math
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from fednlp_bench.record import problems

MAX_NAME_CHARS = 128
MAX_STRING_CHARS = 65_536
MAX_DEPTH = 32
MAX_ABS_METRIC = 1e9
MAX_COUNT = 10**15  # bytes, examples, tokens: far above any real run, far below float trouble
MAX_SECONDS = 10**9  # ~30 years
FUTURE_SKEW = timedelta(days=1)
MAX_DEVIATIONS = 32

# The primary metric of each built-in task (tasks/*.py ``primary_metric``; a test keeps the two
# in step). Kept here as data so that the leaderboard never imports the torch-heavy adapters.
TASK_PRIMARY = {"tc": "accuracy", "st": "f1", "qa": "f1", "s2s": "rougeL", "lm": "accuracy"}
TASK_ORDER = ("tc", "st", "qa", "s2s", "lm")

# Metrics that are fractions by definition.
UNIT_METRICS = frozenset({
    "accuracy", "macro_f1", "micro_f1", "weighted_f1", "f1", "precision", "recall", "exact_match", "em",
    "rouge1", "rouge2", "rougeL", "rougeLsum", "auc", "flip_rate", "gini",
})

_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_FREE_TEXT_OK = frozenset("\t\n")


def safe_text(value: Any, limit: int = 200) -> str:
    """``value`` as one printable line: control/format characters escaped, at most ``limit`` chars."""
    text = value if isinstance(value, str) else repr(value)
    out = []
    for ch in text[:limit]:
        if ch == " " or (unicodedata.category(ch) not in _BAD_CATEGORIES and not ch.isspace()):
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    if len(text) > limit:
        out.append(f"... ({len(text)} chars)")
    return "".join(out)


def name_problem(text: Any) -> str | None:
    """Why ``text`` is not an acceptable name (None when it is)."""
    if not isinstance(text, str):
        return f"must be a string, got {type(text).__name__}"
    norm = unicodedata.normalize("NFKC", text)
    if not norm.strip():
        return "must not be empty"
    if len(norm) > MAX_NAME_CHARS:
        return f"is {len(norm)} characters long (at most {MAX_NAME_CHARS} allowed)"
    for ch in norm:
        cat = unicodedata.category(ch)
        if cat in _BAD_CATEGORIES or (ch.isspace() and ch != " "):
            return (f"contains the character U+{ord(ch):04X} ({cat}); control, format (bidi, zero-width), "
                    f"line-break and unassigned characters are not allowed in names")
    scripts = {unicodedata.name(ch, "?").split()[0] for ch in norm if ch.isalpha()}
    if "LATIN" in scripts and scripts & {"GREEK", "CYRILLIC"}:
        return "mixes Latin with Greek or Cyrillic letters (look-alike names are not allowed)"
    return None


def _string_problem(text: str, free_text: bool) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (lone surrogate)"
    if len(text) > MAX_STRING_CHARS:
        return f"is {len(text)} characters long (at most {MAX_STRING_CHARS})"
    for ch in text:
        if ch in _FREE_TEXT_OK and free_text:
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return f"contains the control or format character U+{ord(ch):04X}"
    return None


def structure_problems(obj: Any) -> list[str]:
    """Depth, string validity and length over the whole document (iterative: no recursion limit)."""
    out: list[str] = []
    stack: list[tuple[Any, str, int]] = [(obj, "record", 0)]
    while stack and len(out) < 5:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            out.append(f"{safe_text(where, 80)} is nested more than {MAX_DEPTH} levels deep")
            continue
        if isinstance(value, dict):
            for key, sub in value.items():
                problem = _string_problem(key, free_text=False)
                if problem:
                    out.append(f"a key in {safe_text(where, 80)} {problem}")
                else:
                    stack.append((sub, f"{where}.{key}", depth + 1))
        elif isinstance(value, list):
            stack.extend((sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(value))
        elif isinstance(value, str):
            problem = _string_problem(value, free_text=True)
            if problem:
                out.append(f"{safe_text(where, 80)} {problem}")
    return out


# --- field checks ------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Collects problems; each method checks one field if present (or requires it)."""

    def __init__(self) -> None:
        self.out: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.out.append(f"{safe_text(where, 100)} {message}")

    def number(self, where: str, v: Any, lo: float | None = None, hi: float | None = None,
               integer: bool = False, optional: bool = True) -> None:
        if v is None and optional:
            return
        if integer and not _is_int(v):
            self.add(where, f"must be an integer, got {safe_text(v, 40)}")
        elif not _is_num(v):
            self.add(where, f"must be a finite number, got {safe_text(v, 40)}")
        elif (lo is not None and v < lo) or (hi is not None and v > hi):
            self.add(where, f"must be in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}], "
                            f"got {safe_text(v, 40)}")

    def name(self, where: str, v: Any, optional: bool = False) -> None:
        if v is None and optional:
            return
        problem = name_problem(v)
        if problem:
            self.add(where, problem)

    def mapping(self, where: str, v: Any, optional: bool = True) -> bool:
        """True when ``v`` is a dict; an absent optional section is fine (returns False)."""
        if isinstance(v, dict):
            return True
        if not (v is None and optional):
            self.add(where, f"must be an object{' or null' if optional else ''}, got {type(v).__name__}")
        return False

    def metric(self, where: str, name: str, v: Any) -> None:
        self.name(f"{where} (metric name)", name)
        if name in UNIT_METRICS:
            self.number(f"{where}.{name}", v, 0.0, 1.0, optional=False)
        elif name.startswith("n_") or name in ("round", "step"):
            self.number(f"{where}.{name}", v, 0, MAX_COUNT, integer=True, optional=False)
        elif isinstance(v, (str, bool)) or v is None:
            return  # labels such as "split": "val" are allowed next to metrics
        else:
            self.number(f"{where}.{name}", v, -MAX_ABS_METRIC, MAX_ABS_METRIC, optional=False)

    def metrics_dict(self, where: str, d: Any) -> None:
        if self.mapping(where, d):
            for k, v in d.items():
                self.metric(where, k, v)


def _check_created(c: _Checker, created: Any, now: datetime) -> None:
    try:
        when = datetime.fromisoformat(created)
    except (TypeError, ValueError):
        c.add("created", f"must be an ISO-8601 time, got {safe_text(created, 40)}")
        return
    if when.tzinfo is None:
        c.add("created", "must carry a timezone (e.g. +00:00)")
    elif when > now + FUTURE_SKEW:
        c.add("created", f"is in the future ({safe_text(created, 40)})")
    elif when.year < 2000:
        c.add("created", f"is before 2000 ({safe_text(created, 40)})")


def _check_names(c: _Checker, r: dict[str, Any]) -> None:
    for key in ("task", "dataset", "model"):
        c.name(key, r[key])
    c.name("preset", r["preset"], optional=True)
    c.name("run_id", r["run_id"])
    c.name("algorithm.name", r["algorithm"]["name"])
    c.name("partition.method", r["partition"]["method"])
    c.name("metrics.primary", r["metrics"]["primary"])
    for section, key in (("algorithm", "hparams"), ("partition", "params")):
        for k, v in r[section][key].items():
            c.name(f"{section}.{key} key", k)
            if isinstance(v, str):
                c.name(f"{section}.{key}.{k}", v)
    task_primary = TASK_PRIMARY.get(r["task"])
    if task_primary is not None and r["metrics"]["primary"] != task_primary:
        c.add("metrics.primary", f"is {safe_text(r['metrics']['primary'], 40)!s}, but the primary metric of "
                                 f"task {r['task']} is {task_primary}")


def _check_counts(c: _Checker, r: dict[str, Any]) -> None:
    c.number("seed", r["seed"], 0, 2**63 - 1, integer=True)
    p = r["partition"]
    c.number("partition.n_clients", p["n_clients"], 1, 10**8, integer=True)
    fl = r["fl"]
    for key in ("rounds", "clients_per_round", "batch_size"):
        c.number(f"fl.{key}", fl[key], 1, 10**8, integer=True)
    c.number("fl.local_epochs", fl.get("local_epochs"), 1, 10**6, integer=True)
    c.number("fl.local_steps", fl.get("local_steps"), 1, 10**9, integer=True)
    c.number("fl.client_lr", fl["client_lr"], 0.0, 10.0)
    if _is_num(fl["client_lr"]) and fl["client_lr"] <= 0:
        c.add("fl.client_lr", "must be > 0")
    c.number("fl.weight_decay", fl.get("weight_decay"), 0.0, 1.0)
    c.number("fl.dropout", fl.get("dropout"), 0.0, 1.0)
    for key in ("n_train", "n_test", "n_val"):
        c.number(f"fl.{key}", fl.get(key), 0, MAX_COUNT, integer=True)
    for key in ("sampler", "setting"):
        c.name(f"fl.{key}", fl.get(key), optional=True)
    for key, v in r["cost"].items():
        if v is None or isinstance(v, (str, dict, list)):
            continue
        hi = MAX_SECONDS if key.endswith("seconds") else MAX_COUNT
        c.number(f"cost.{key}", v, 0, hi)


def _check_metrics(c: _Checker, m: dict[str, Any]) -> None:
    c.metrics_dict("metrics.final", m["final"])
    c.metrics_dict("metrics.initial", m.get("initial"))
    if isinstance(m["per_round"], list):
        for i, row in enumerate(m["per_round"]):
            if c.mapping(f"metrics.per_round[{i}]", row, optional=False):
                c.metrics_dict(f"metrics.per_round[{i}]", row)
                if "split" in row:
                    c.name(f"metrics.per_round[{i}].split", row["split"])
    for cid, row in m["per_client"].items():
        c.name("metrics.per_client key", cid)
        if c.mapping(f"metrics.per_client.{cid}", row, optional=False):
            c.metrics_dict(f"metrics.per_client.{cid}", row)
    for key in ("fairness", "counterfactual"):
        d = m.get(key)
        if c.mapping(f"metrics.{key}", d):
            for k, v in d.items():
                if k.endswith("seconds"):
                    c.number(f"metrics.{key}.{k}", v, 0, MAX_SECONDS)
                elif k.endswith("_prob") or k == "flip_rate":
                    c.number(f"metrics.{key}.{k}", v, 0.0, 1.0)
                elif not isinstance(v, (str, bool, list, dict)) and v is not None:
                    c.metric(f"metrics.{key}", k, v)
    c.number("metrics.dropped_clients", m.get("dropped_clients"), 0, MAX_COUNT, integer=True)
    _check_failed_clients(c, m.get("failed_clients"))
    c.name("metrics.final_split", m.get("final_split"), optional=True)
    best = m.get("best_val")
    if c.mapping("metrics.best_val", best):
        c.number("metrics.best_val.round", best.get("round"), 0, MAX_COUNT, integer=True)
        c.number("metrics.best_val.val", best.get("val"), -MAX_ABS_METRIC, MAX_ABS_METRIC)
        c.metrics_dict("metrics.best_val.test", best.get("test"))


def _check_failed_clients(c: _Checker, failed: Any) -> None:
    """``[{round, client, reason}]``: clients whose update raised and was left out of the round."""
    if failed is None:
        return
    if not isinstance(failed, list):
        c.add("metrics.failed_clients", "must be a list")
        return
    for i, item in enumerate(failed):
        where = f"metrics.failed_clients[{i}]"
        if not c.mapping(where, item, optional=False):
            return
        c.number(f"{where}.round", item.get("round"), 0, MAX_COUNT, integer=True, optional=False)
        c.number(f"{where}.client", item.get("client"), 0, MAX_COUNT, integer=True, optional=False)
        if not isinstance(item.get("reason"), str):
            c.add(f"{where}.reason", "must be a string")


def _check_stats(c: _Checker, stats: Any) -> None:
    if not c.mapping("partition.stats", stats):
        return
    for key in ("label_counts", "sizes", "label_names"):
        if key in stats and not isinstance(stats[key], list):
            c.add(f"partition.stats.{key}", "must be a list")
    for i, row in enumerate(stats.get("label_counts") or [] if isinstance(stats.get("label_counts"), list) else []):
        if not isinstance(row, list) or not all(_is_int(v) and 0 <= v <= MAX_COUNT for v in row):
            c.add(f"partition.stats.label_counts[{i}]", "must be a list of counts >= 0")
            break
    sizes = stats.get("sizes")
    if isinstance(sizes, list) and not all(_is_int(v) and 0 <= v <= MAX_COUNT for v in sizes):
        c.add("partition.stats.sizes", "must be a list of counts >= 0")
    c.number("partition.stats.mean_js", stats.get("mean_js"), 0.0, 1.0)


def _check_privacy(c: _Checker, r: dict[str, Any]) -> None:
    priv = r.get("privacy")
    if not c.mapping("privacy", priv):
        return
    for level in ("user_level", "sample_level"):
        p = priv.get(level)
        if not c.mapping(f"privacy.{level}", p):
            continue
        c.number(f"privacy.{level}.epsilon", p.get("epsilon"), 0.0, 1e12)
        c.number(f"privacy.{level}.delta", p.get("delta"), 0.0, 1.0)
        c.number(f"privacy.{level}.noise_multiplier", p.get("noise_multiplier"), 0.0, 1e9)
        c.number(f"privacy.{level}.clip", p.get("clip"), 0.0, 1e12)


def _check_audit(c: _Checker, r: dict[str, Any]) -> None:
    audit = r.get("audit")
    if c.mapping("audit", audit):
        example = audit.get("example")
        if c.mapping("audit.example", example):
            c.number("audit.example.auc", example.get("auc"), 0.0, 1.0)


def _check_new_sections(c: _Checker, r: dict[str, Any]) -> None:
    """Optional sections newer runs add: tuning, track, peft, provenance.plugin, algorithm.deviations."""
    tuning = r.get("tuning")
    if c.mapping("tuning", tuning):
        for key in ("space", "chosen"):
            if key in tuning:
                c.mapping(f"tuning.{key}", tuning[key])
        if "scores" in tuning and not isinstance(tuning["scores"], (list, dict)):
            c.add("tuning.scores", "must be a list or an object")
    track = r.get("track")
    if c.mapping("track", track):
        c.name("track.name", track.get("name"))
        if not isinstance(track.get("version"), (str, int)) or isinstance(track.get("version"), bool):
            c.add("track.version", "must be a string or an integer")
    peft = r.get("peft")
    if c.mapping("peft", peft):
        c.name("peft.method", peft.get("method"))
        c.mapping("peft.params", peft.get("params"))
    c.number("cost.n_params_total", r["cost"].get("n_params_total"), 0, MAX_COUNT, integer=True)
    prov = r["provenance"]
    plugin = prov.get("plugin")
    if c.mapping("provenance.plugin", plugin):
        for key, v in plugin.items():
            if v is not None and (not isinstance(v, str) or len(v) > 512):
                c.add(f"provenance.plugin.{key}", "must be null or a string of at most 512 characters")
        c.name("provenance.plugin.source", plugin.get("source"), optional=True)
    devs = r["algorithm"].get("deviations")
    if devs is not None and not (isinstance(devs, list) and len(devs) <= MAX_DEVIATIONS
                                 and all(isinstance(d, str) and 0 < len(d) <= 1000 for d in devs)):
        c.add("algorithm.deviations", f"must be a list of at most {MAX_DEVIATIONS} non-empty strings "
                                      "of at most 1000 characters")
    if "git_dirty" in prov and not isinstance(prov["git_dirty"], bool):
        c.add("provenance.git_dirty", "must be true or false")
    commit = prov.get("git_commit")
    if isinstance(commit, str) and (len(commit) > 64 or not all(ch in "0123456789abcdef" for ch in commit)):
        c.add("provenance.git_commit", "must be a hexadecimal commit id")
    for key, v in (prov.get("packages") or {}).items():
        if not isinstance(v, str) or len(v) > 128:
            c.add(f"provenance.packages.{key}", "must be a version string")
    command = prov.get("command")
    if command is not None and not (isinstance(command, list) and all(isinstance(a, str) for a in command)):
        c.add("provenance.command", "must be a list of strings")


_CHECKS: tuple[Callable[[_Checker, dict[str, Any]], None], ...] = (
    _check_names, _check_counts, lambda c, r: _check_metrics(c, r["metrics"]),
    lambda c, r: _check_stats(c, r["partition"].get("stats")), _check_privacy, _check_audit, _check_new_sections,
)


def strict_problems(record: Any, now: datetime | None = None) -> list[str]:
    """Every problem of ``record`` (empty when it is safe to publish); see the module docstring."""
    found = problems(record)
    if found:
        return [safe_text(p, 300) for p in found]
    found = structure_problems(record)
    if found:
        return found
    c = _Checker()
    _check_created(c, record["created"], now or datetime.now(timezone.utc))
    for check in _CHECKS:
        check(c, record)
    return list(dict.fromkeys(c.out))


def normalize_names(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with its names NFKC-normalised (what the leaderboard compares)."""
    def nfkc(s: Any) -> Any:
        return unicodedata.normalize("NFKC", s) if isinstance(s, str) else s

    out = dict(record)
    for key in ("task", "dataset", "model", "preset"):
        out[key] = nfkc(record[key])
    out["algorithm"] = {**record["algorithm"], "name": nfkc(record["algorithm"]["name"]),
                        "hparams": {nfkc(k): nfkc(v) for k, v in record["algorithm"]["hparams"].items()}}
    out["partition"] = {**record["partition"], "method": nfkc(record["partition"]["method"]),
                        "params": {nfkc(k): nfkc(v) for k, v in record["partition"]["params"].items()}}
    return out
