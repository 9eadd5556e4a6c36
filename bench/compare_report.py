"""The pure parts of bench/compare.py: CPU accounting from /proc/PID/stat text, the issue 17
targets and ratios, py-spy raw profile summaries, and the text / markdown tables.

No processes, sockets or clocks here (bench/compare.py is the shell that runs things), so
tests/unit/bench/test_compare_report.py checks every rule on literal inputs.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# /proc/PID/stat: fields after the ")" that closes the command name; utime and stime are
# fields 14 and 15 of the whole line (1-based), so 11 and 12 of what follows the ")".
_UTIME_FIELD = 11
_STIME_FIELD = 12


def cpu_seconds_from_stat(stat_text: str, clock_ticks_per_s: int) -> float:
    """utime + stime (s) from the text of /proc/PID/stat. The command name may hold spaces
    and parentheses, so the fields are counted from the last ")"."""
    head, closing, rest = stat_text.rpartition(")")
    fields = rest.split()
    if not closing or "(" not in head or len(fields) <= _STIME_FIELD:
        raise ValueError(f"not a /proc/PID/stat line: {stat_text[:80]!r}")
    if clock_ticks_per_s <= 0:
        raise ValueError(f"clock ticks per second must be positive, got {clock_ticks_per_s}")
    return (int(fields[_UTIME_FIELD]) + int(fields[_STIME_FIELD])) / clock_ticks_per_s


def unwritten_mb(meminfo_text: str) -> float:
    """Dirty + Writeback (MB, 10^6 bytes) from the text of /proc/meminfo: what earlier rows
    wrote that is not on disk yet, whose writeback shares the disk and the two cores with
    the next row. Recorded per row so a table shows whether it was there (it was not what
    made the latency rows after 3,000,000-record rows slower: ~5 MB was left by then)."""
    found: dict[str, int] = {}
    for line in meminfo_text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("Dirty", "Writeback"):
            amount, _, unit = rest.strip().partition(" ")
            if unit != "kB" or not amount.isdigit():
                raise ValueError(f"unexpected /proc/meminfo line: {line!r}")
            found[name] = int(amount)
    if set(found) != {"Dirty", "Writeback"}:
        raise ValueError("/proc/meminfo text without Dirty and Writeback lines")
    return round(sum(found.values()) * 1024 / 1e6, 1)


def cpu_per_million(before_s: float, after_s: float, records: int) -> float | None:
    """CPU seconds per million records between two readings; None without records."""
    if records <= 0:
        return None
    if after_s < before_s:
        raise ValueError(f"CPU time went backwards ({before_s} -> {after_s}): another process?")
    return round((after_s - before_s) / (records / 1e6), 2)


# --------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """One done-when figure of issue 17: `row`'s `figure` must be >= (or <=) `bound`."""

    label: str
    row: str
    figure: str  # "records_per_s" or a latency key such as "produce_p99_ms"
    bound: float
    at_least: bool = True

    def met(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


ISSUE_17_TARGETS: tuple[Target, ...] = (
    Target("pre-built batches produce", "batches", "records_per_s", 1_000_000),
    Target("Python SDK producer, send()", "sdk-send", "records_per_s", 500_000),
    Target("the same, switch interval 0.5 ms", "sdk-send-0.5ms", "records_per_s", 500_000),
    Target("Python SDK producer, send_many()", "sdk-send-many", "records_per_s", 500_000),
    Target("SDK consumer", "sdk-consume", "records_per_s", 1_000_000),
    Target("p99 produce latency at 10,000 rec/s", "latency-10000", "produce_p99_ms", 10.0,
           at_least=False),
    Target("the same, confluent-kafka producing", "latency-10000-kafka", "produce_p99_ms",
           10.0, at_least=False),
)

# Raftka rows against the NATS JetStream R3 rows of the same run: (label, numerator row,
# denominator row, the ratio the issue asks for or None when it asks none).
ISSUE_17_RATIOS: tuple[tuple[str, str, str, float | None], ...] = (
    ("SDK send() / NATS publish", "sdk-send", "nats-publish", 10.0),
    ("SDK send_many() / NATS publish", "sdk-send-many", "nats-publish", 10.0),
    ("pre-built batches / NATS publish", "batches", "nats-publish", None),
    ("confluent-kafka produce / NATS publish", "kafka-produce", "nats-publish", None),
    ("SDK consume / NATS consume", "sdk-consume", "nats-consume", 10.0),
    ("confluent-kafka consume / NATS consume", "kafka-consume", "nats-consume", None),
    ("SDK send_many() / confluent-kafka produce", "sdk-send-many", "kafka-produce", None),
)


def _figure(rows: Mapping[str, Mapping[str, Any]], row: str, figure: str) -> float | None:
    value = rows.get(row, {}).get(figure)
    return float(value) if isinstance(value, int | float) else None


def target_table(rows: Mapping[str, Mapping[str, Any]],
                 targets: Iterable[Target] = ISSUE_17_TARGETS) -> list[dict[str, Any]]:
    """Each target whose row ran: the figure, the bound, figure / bound and whether it is met."""
    out = []
    for target in targets:
        value = _figure(rows, target.row, target.figure)
        if value is None:
            continue
        out.append({
            "target": target.label,
            "row": target.row,
            "value": value,
            "bound": ("≥ " if target.at_least else "≤ ") + _number(target.bound),
            "ratio": round(value / target.bound, 2) if target.bound else None,
            "met": target.met(value),
        })
    return out


def ratio_table(
    rows: Mapping[str, Mapping[str, Any]],
    ratios: Iterable[tuple[str, str, str, float | None]] = ISSUE_17_RATIOS,
) -> list[dict[str, Any]]:
    """records/s of one row over another's, for each pair whose rows both ran."""
    out = []
    for label, top, bottom, wanted in ratios:
        a = _figure(rows, top, "records_per_s")
        b = _figure(rows, bottom, "records_per_s")
        if a is None or not b:
            continue
        ratio = round(a / b, 2)
        out.append({"ratio": label, "value": ratio, "wanted": wanted,
                    "met": None if wanted is None else ratio >= wanted})
    return out


# --------------------------------------------------------------------------- profiles
# Samples whose innermost named frame is one of these are a thread waiting, not working
# (for a lock, a condition, the kernel's poll, a sleep, or the GIL: contention, not CPU):
# dropped from the own-time summary, since py-spy --native samples threads parked there too.
IDLE_NATIVE_LEAVES = frozenset({
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect",
    "pselect6", "clock_nanosleep", "__clock_nanosleep", "nanosleep", "__nanosleep",
    "futex", "syscall", "__futex_abstimed_wait_common", "__futex_abstimed_wait_common64",
    "futex_wait", "__lll_lock_wait", "pthread_cond_wait", "pthread_cond_timedwait",
    "___pthread_cond_wait", "___pthread_cond_timedwait", "__pthread_cond_wait",
    "__pthread_cond_timedwait", "__pthread_clockjoin_ex", "sem_wait", "sem_timedwait",
    "sem_clockwait", "do_futex_wait", "__new_sem_wait_slow64", "__new_sem_wait_slow",
    "accept", "accept4", "time_sleep", "pysleep", "select_epoll_poll", "select_poll_poll",
    "lock_PyThread_acquire_lock", "acquire_timed", "PyThread_acquire_lock_timed",
    "select_poll_poll_impl", "select_epoll_poll_impl", "take_gil", "drop_gil",
})
# Python functions (name, file suffix) that only wait (seen as the leaf without --native):
# selectors' select, a threading Condition/Event wait, queue.get, Thread.join.
IDLE_PYTHON_LEAVES = frozenset({
    ("select", "selectors.py"), ("wait", "threading.py"), ("get", "queue.py"),
    ("_wait_for_tstate_lock", "threading.py"),
})
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<where>[^()]*?)(?::\d+)?\)$")


def _frame_key(frame: str) -> tuple[str, str]:
    """(function, file or library) of a py-spy frame, line number dropped."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["name"], match["where"]


def is_idle(frame: str) -> bool:
    name, where = _frame_key(frame)
    if name in IDLE_NATIVE_LEAVES:
        return True
    # py-spy names a method Class.method (EpollSelector.select, Condition.wait, Queue.get).
    method = name.rsplit(".", 1)[-1]
    return any(method == n and where.endswith(suffix) for n, suffix in IDLE_PYTHON_LEAVES)


def _unresolved(frame: str) -> bool:
    """A native frame py-spy has no symbol for: `0x7f... (libc.so.6)`."""
    return frame.startswith("0x")


def own_frame(frames: Sequence[str]) -> tuple[str, bool]:
    """(the frame a sample's own time goes to, whether the sample only waits).

    py-spy --native often cannot name a libc function (no symbols), so the innermost frames
    can be bare addresses: the first named frame above them decides, e.g. a lock wait
    (`PyThread_acquire_lock_timed;0x7f..;0x7f..`) is waiting, and `ProducerBatch.add;0x7f..`
    is ProducerBatch.add's own time spent in a libc call, shown as `ProducerBatch.add (...)
    > libc.so.6`."""
    named = len(frames) - 1
    while named >= 0 and _unresolved(frames[named]):
        named -= 1
    if named < 0:
        library = _frame_key(frames[-1])[1]
        return f"unnamed ({library})", False
    if is_idle(frames[named]):
        return "", True
    name, where = _frame_key(frames[named])
    label = f"{name} ({where})" if where else name
    if named < len(frames) - 1:
        label += f" > {_frame_key(frames[-1])[1]}"
    return label, False


def summarize_raw_profile(text: str, top: int = 12) -> dict[str, Any]:
    """Own time per frame from py-spy's raw (collapsed) output: `frame;frame;...;leaf COUNT`
    lines. Thread labels (py-spy --threads), samples that only wait (own_frame, is_idle) and
    interpreter start-up (importlib) are dropped; the shares are of the busy samples, and
    `busy_share` is busy samples over all samples."""
    own: collections.Counter[str] = collections.Counter()
    total = busy = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith(("thread (", "process "))]
        total += count
        if not frames or "importlib._bootstrap" in stack:
            continue
        label, idle = own_frame(frames)
        if idle:
            continue
        own[label] += count
        busy += count
    return {
        "samples": total,
        "busy_share": round(busy / total, 3) if total else 0.0,
        "top": [(frame, round(100 * n / busy, 1)) for frame, n in own.most_common(top)]
        if busy else [],
    }


# --------------------------------------------------------------------------- tables
def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "NO")
    if isinstance(value, int) or (isinstance(value, float) and value >= 1000):
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def servers_total(cpu: Mapping[str, float | None]) -> float | None:
    """CPU-s per million records of every process but the client."""
    values = [v for name, v in cpu.items() if name != "client"]
    return None if not values or None in values else round(sum(v or 0.0 for v in values), 2)


def cpu_cells(row: Mapping[str, Any], processes: Sequence[str]) -> list[str]:
    """One cell per process, then the servers' total."""
    cpu = row.get("cpu_s_per_m", {})
    return [*(_number(cpu.get(name)) for name in processes), _number(servers_total(cpu))]


def render_table(headers: Sequence[str], body: Sequence[Sequence[str]],
                 markdown: bool, left: int = 2) -> str:
    """A markdown table, or aligned text with the first `left` columns left-aligned."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in body)) if body else len(h)
              for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" if i < left else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*headers), *(fmt.format(*cells) for cells in body)])


def throughput_body(rows: Sequence[Mapping[str, Any]],
                    processes: Sequence[str]) -> list[list[str]]:
    return [[row["name"], row.get("what", ""), _number(row.get("records")),
             _number(row.get("records_per_s")), _number(row.get("mb_per_s")),
             *cpu_cells(row, processes), _number(row.get("unwritten_mb_before"))]
            for row in rows if "records_per_s" in row]


def latency_body(rows: Sequence[Mapping[str, Any]],
                 processes: Sequence[str]) -> list[list[str]]:
    return [[row["name"], row.get("what", ""), _number(row.get("produce_p50_ms")),
             _number(row.get("produce_p99_ms")), _number(row.get("produce_p99.9_ms")),
             _number(row.get("end_to_end_p99_ms")), *cpu_cells(row, processes),
             _number(row.get("unwritten_mb_before"))]
            for row in rows if "produce_p50_ms" in row]


def target_body(rows: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    body = [[t["target"], _number(t["value"]), t["bound"], f"{t['ratio']:g}x",
             _number(t["met"])] for t in target_table(rows)]
    body += [[r["ratio"], f"{r['value']:g}x",
              "-" if r["wanted"] is None else f"≥ {r['wanted']:g}x", "", _number(r["met"])]
             for r in ratio_table(rows)]
    return body


def profile_body(profiles: Mapping[str, Mapping[str, Any]], top: int) -> list[list[str]]:
    body = []
    for key, summary in profiles.items():
        for rank, (frame, share) in enumerate(summary["top"][:top], 1):
            label = (f"{key} (busy in {summary['busy_share']:.0%} of {summary['samples']} "
                     "thread samples)") if rank == 1 else ""
            body.append([label, str(rank), f"{share:.1f}%", frame.replace("|", "\\|")])
    return body
