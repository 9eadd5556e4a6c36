"""How fast the console's pages render in a real browser with a 1,000-partition topic, and the
console screenshots in docs/.

    python bench/console_render.py [--runs 5] [--partitions 1000] [--json]
                                   [--screenshot docs/console-live.png]
                                   [--topic-screenshot docs/console-topic.png]
                                   [--set KEY=VALUE ...] [--workdir DIR]

Starts 3 real brokers (`raftka cluster up`'s layout, metrics on gRPC port + 3), creates one
topic of --partitions partitions with RF=3 and a few small ones, produces records to every
partition (and 20,000 to one partition, for the message browser), commits a consumer group,
starts `raftka console` as its own process, and drives Debian's headless Chromium through
Selenium (as tests/integration/test_console_browser.py does), at 1280x800. Each run is a full
page load (about:blank first, so no hash-route shortcut), timed in the page itself:

  api_*_ms        the JSON endpoint the page calls (GET /api/topics, /api/topics/NAME, one
                  message page), timed from this process over HTTP like curl would, alone
  dom_ms          navigation start (performance.now() = 0) -> the page's table holds every
                  row (a MutationObserver installed before the page's own scripts, through
                  the DevTools Protocol, counts the rows)
  painted_ms      ... -> the frame after that has been laid out and painted (requestAnimation-
                  Frame, then a task)
  fetch_ms        the page's own call of the endpoint, from the browser's Resource Timing
  load_ms         Navigation Timing's loadEventEnd (the HTML, CSS and script)
  messages_page_records_decoded   records the brokers decoded for one message page of 50
                  from a partition of 20,050 (their records-out counter): a page, not the
                  partition

Printed as median and max of --runs. --screenshot saves the Overview after records have
flowed for a while (throughput chart with data, brokers, quorum); --topic-screenshot the
1,000-partition topic's page.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.partition_scale import ScaleBench, wait_isr_full  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WINDOW = (1280, 800)
SMALL_TOPICS = {"orders": 3, "payments": 6, "audit-log": 1}
BIG_TOPIC = "clicks"
# Records produced into every partition of the big topic, and into orders-0 (the message
# browser's partition: it pages through it, it does not load it).
RECORDS_PER_PARTITION = 5
DEEP_PARTITION_RECORDS = 20_000
# How long a page may take to show all its rows before the run counts as failed (s).
PAGE_TIMEOUT_S = 60.0
# How long records flow while the Overview is open before its screenshot (s).
CHART_FILL_S = 30.0

# Installed before the page's own scripts on every document: records when each watched
# table first holds its expected rows, and when the frame after that was painted.
OBSERVER_JS = """
(() => {
  const wanted = %s;
  const seen = window.__rendered = {};
  const check = () => {
    for (const [selector, count] of Object.entries(wanted)) {
      if (seen[selector]) continue;
      if (document.querySelectorAll(selector).length >= count) {
        const entry = seen[selector] = { dom: performance.now(), painted: null };
        requestAnimationFrame(() => setTimeout(() => { entry.painted = performance.now(); }));
      }
    }
  };
  new MutationObserver(check).observe(document, { childList: true, subtree: true });
})();
"""


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1),
            "min": round(min(values), 1)}


class Console:
    """`raftka console` as its own process."""

    def __init__(self, bootstrap: str, metrics: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", "raftka", "console", "--bootstrap", bootstrap,
             "--port", str(self.port), "--metrics", ",".join(metrics)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.get("overview")
                return
            time.sleep(0.2)
        raise RuntimeError("the console did not answer within 30 s")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}/api/{path}", timeout=60) as reply:
            return json.loads(reply.read())

    def timed_get(self, path: str) -> float:
        started = time.perf_counter()
        with urllib.request.urlopen(f"{self.url}/api/{path}", timeout=60) as reply:
            reply.read()
        return (time.perf_counter() - started) * 1000

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def browser(wanted: dict[str, int]) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-extensions",
                 "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    # The viewport itself WINDOW (--window-size sizes the window, toolbars included).
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False})
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                           {"source": OBSERVER_JS % json.dumps(wanted)})
    return driver


def page_load(driver: Any, url: str, selector: str, api_path: str) -> dict[str, float]:
    """One full navigation to `url`; the in-page times of `selector` reaching its rows."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    while True:
        found = driver.execute_script("return (window.__rendered || {})[arguments[0]] || null",
                                      selector)
        if found and found.get("painted") is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}: {selector} did not get its rows in {PAGE_TIMEOUT_S} s")
        time.sleep(0.02)
    timing = driver.execute_script("""
      const nav = performance.getEntriesByType('navigation')[0];
      const calls = performance.getEntriesByType('resource')
        .filter(r => new URL(r.name).pathname === arguments[0]);
      const call = calls.length ? calls[0] : null;
      return { load: nav.loadEventEnd, fetch: call ? call.duration : -1,
               queued: call ? call.requestStart - call.startTime : -1,
               server: call ? call.responseStart - call.requestStart : -1 };
    """, "/api/" + api_path)
    return {"dom_ms": found["dom"], "painted_ms": found["painted"],
            "fetch_ms": timing["fetch"], "fetch_queued_ms": timing["queued"],
            "fetch_waiting_ms": timing["server"], "load_ms": timing["load"]}


def records_out(metrics: list[str], topic: str) -> int:
    """Records the brokers decoded for consumers of `topic`, summed over their /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for address in metrics:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "raftka_brokertopicmetrics_messagesout_total"
                        and sample.labels.get("topic") == topic):
                    total += sample.value
    return int(total)


def produce(bootstrap: str, partitions: int) -> dict[str, int]:
    """Every partition gets records; returns the sends that failed, by topic-partition."""
    from raftka import Producer

    sent: list[tuple[str, Any]] = []
    with Producer(bootstrap_servers=bootstrap, acks="all", linger_ms=5) as producer:
        for p in range(partitions):
            for i in range(RECORDS_PER_PARTITION):
                sent.append((f"{BIG_TOPIC}-{p}", producer.send(
                    BIG_TOPIC, value=json.dumps({"page": f"/p/{i}", "n": i}).encode(),
                    key=b"user-%d" % (p * 7 % 101), partition=p)))
        for name, count in SMALL_TOPICS.items():
            for p in range(count):
                for i in range(50):
                    sent.append((f"{name}-{p}", producer.send(name, value=json.dumps(
                        {"id": i, "amount": i * 3 % 97, "topic": name}).encode(),
                        key=b"k%d" % i, partition=p)))
        for i in range(DEEP_PARTITION_RECORDS):
            sent.append(("orders-0", producer.send(
                "orders", value=b'{"order": %d, "status": "paid"}' % i, key=b"o%d" % i,
                partition=0)))
        producer.flush()
    failed: dict[str, int] = {}
    for name, future in sent:
        try:
            future.get(timeout=60)
        except Exception as exc:  # counted and reported, not fatal
            key = f"{name}: {type(exc).__name__}"
            failed[key] = failed.get(key, 0) + 1
    return failed


def commit_group(bootstrap: str) -> None:
    """A group on orders, a few records behind, so the console has a group with lag."""
    from raftka import Consumer
    from raftka.client.consumer import TopicPartition

    consumer = Consumer("orders", bootstrap_servers=bootstrap, group_id="billing",
                        auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        deadline = time.monotonic() + 60
        while len(consumer.assignment()) < SMALL_TOPICS["orders"]:
            consumer.poll(timeout_ms=200)
            if time.monotonic() > deadline:
                raise RuntimeError("the group got no assignment")
        consumer.commit({TopicPartition("orders", p): 40 for p in range(SMALL_TOPICS["orders"])})
    finally:
        consumer.close()


class BackgroundLoad:
    """Records flowing in and out while the Overview's chart fills (SDK, its own thread)."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from raftka import Consumer, Producer
        from raftka.client.consumer import TopicPartition

        producer = Producer(bootstrap_servers=self._bootstrap, acks="all", linger_ms=5)
        consumer = Consumer(bootstrap_servers=self._bootstrap, auto_offset_reset="latest")
        consumer.assign([TopicPartition("payments", p) for p in range(SMALL_TOPICS["payments"])])
        n = 0
        try:
            while not self._stop.is_set():
                for _ in range(200):
                    producer.send("payments", value=b'{"payment": %d, "eur": %d}' % (n, n % 250))
                    n += 1
                producer.flush()
                consumer.poll(timeout_ms=50)
                time.sleep(0.05 + 0.15 * (n // 200 % 4))  # an uneven rate draws a line
        finally:
            producer.close()
            consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def screenshots(driver: Any, bootstrap: str, metrics: list[str], root: Path,
                overview: str | None, topic: str | None) -> None:
    """From a console of their own, so the chart shows the steady load, not the spikes of
    the timed runs' reads."""
    console = Console(bootstrap, metrics, root / "console-screenshots.log")
    load = BackgroundLoad(bootstrap) if overview else None
    try:
        if overview:
            driver.get("about:blank")
            driver.get(f"{console.url}/#/overview")
            time.sleep(CHART_FILL_S)
            driver.execute_script("window.scrollTo(0, 0)")
            Path(overview).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(overview)
            progress(f"  saved {overview}")
        if topic:
            driver.get("about:blank")
            driver.get(f"{console.url}/#/topics/{BIG_TOPIC}")
            time.sleep(2)
            Path(topic).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(topic)
            progress(f"  saved {topic}")
    finally:
        if load is not None:
            load.stop()
        console.stop()


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    settings = dict(item.split("=", 1) for item in args.set)
    bench = ScaleBench(root, settings, None)
    result: dict[str, Any] = {"partitions": args.partitions, "runs": args.runs}
    console = None
    driver = None
    try:
        progress("starting 3 brokers")
        bench.start_ids(list(bench.addresses))
        bench.wait_whole_long()
        bootstrap = ",".join(bench.addresses.values())
        progress(f"creating {BIG_TOPIC} ({args.partitions} partitions, RF=3) and small topics")
        bench.create(BIG_TOPIC, args.partitions)
        for name, count in SMALL_TOPICS.items():
            bench.create(name, count)
        total = args.partitions + sum(SMALL_TOPICS.values())
        wait_isr_full(bench, total, "create")
        progress("producing")
        result["produce_failed"] = produce(bootstrap, args.partitions)
        if result["produce_failed"]:
            progress(f"  sends that failed: {result['produce_failed']}")
        commit_group(bootstrap)
        wait_isr_full(bench, total, "after produce")  # __consumer_offsets too, once made
        metrics = [f"127.0.0.1:{n.metrics_port}" for n in bench.layout.all_nodes()]
        console = Console(bootstrap, metrics, root / "console.log")
        topics = len(console.get("topics")["topics"])
        pages = {
            "topics": (f"{console.url}/#/topics", "#topics tbody tr[data-topic]", topics,
                       "topics"),
            "topic": (f"{console.url}/#/topics/{BIG_TOPIC}",
                      "#partitions tbody tr[data-partition]", args.partitions,
                      f"topics/{BIG_TOPIC}"),
            "messages": (f"{console.url}/#/messages/orders/0?from=earliest&limit=50",
                         "#messages tbody tr[data-offset]", 50,
                         "topics/orders/partitions/0/messages"),
        }
        api_query = {"messages": "?from=earliest&value=0&limit=50"}
        for name, (_, _, _, api_path) in pages.items():
            console.timed_get(api_path + api_query.get(name, ""))  # warm: channels, metadata
        for name, (_, _, _, api_path) in pages.items():
            result[f"api_{name}_ms"] = summary(
                [console.timed_get(api_path + api_query.get(name, "")) for _ in range(args.runs)])
            progress(f"  api {name}: {result[f'api_{name}_ms']}")
        driver = browser({selector: rows for _, selector, rows, _ in pages.values()})
        page_load(driver, pages["topics"][0], pages["topics"][1], "topics")  # warm the cache
        for name, (url, selector, _, api_path) in pages.items():
            runs = [page_load(driver, url, selector, api_path) for _ in range(args.runs)]
            result[name] = {key: summary([r[key] for r in runs]) for key in runs[0]}
            result[name]["runs_painted_ms"] = [round(r["painted_ms"]) for r in runs]
            progress(f"  browser {name}: {result[name]}")
        # One message page: what the brokers decoded for it (their records-out counter)
        before = records_out(metrics, "orders")
        deep = console.get("topics/orders/partitions/0/messages?from=earliest&limit=50")
        result["messages_page_records_decoded"] = records_out(metrics, "orders") - before
        result["messages_partition_records"] = deep["high_watermark"] - deep["log_start_offset"]
        result["messages_page_records"] = len(deep["records"])
        result["messages_next_offset"] = deep["next_offset"]
        if args.screenshot or args.topic_screenshot:
            screenshots(driver, bootstrap, metrics, root, args.screenshot, args.topic_screenshot)
        result["throughput_last_points"] = console.get("throughput")["points"][-4:]
        overview = console.get("overview")
        result["under_replicated_at_end"] = overview["under_replicated"]
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        result["browser_errors"] = [e["message"] for e in errors]
        result["load_average"] = os.getloadavg()
    finally:
        if driver is not None:
            driver.quit()
        if console is not None:
            console.stop()
        bench.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--screenshot", help="save the Overview here (PNG)")
    parser.add_argument("--topic-screenshot", help="save the big topic's page here (PNG)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", help="keep the brokers' data and logs here")
    args = parser.parse_args()
    if args.runs < 1 or args.partitions < 1:
        parser.error("--runs and --partitions must be at least 1")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        parser.error("needs Chromium and chromedriver (apt-get install chromium chromium-driver)")
    with tempfile.TemporaryDirectory(prefix="raftka-console-render-") as scratch:
        root = Path(args.workdir or scratch)
        result = measure(args, root)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
