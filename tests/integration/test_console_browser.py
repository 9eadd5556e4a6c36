"""The console in a real browser (Debian's headless Chromium driven by Selenium) against 3
real brokers: every page shows live data, records go both ways between the UI and the SDK,
a killed broker shows as fenced with a leader move in the live view, and the browser logs
no error; the message browser pages through a partition; reloads do not starve the page
of connections. Screenshots go to build/console-screenshots/ (the ones in docs/ come from
bench/console_render.py).

Skips only when Chromium, its driver or Selenium is missing (.ci/run installs them)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftka import Admin, Consumer, Producer
from raftka.client.consumer import TopicPartition
from tests.console_harness import ConsoleProcess
from tests.harness import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "console-screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# How long a page may take to show what the test waits for (s).
PAGE_WAIT_S = 10
# A killed broker must show as fenced, with a leader move, within this (s); the session
# timeout of the test cluster is 2 s.
FAILOVER_SHOWN_WITHIN_S = 8


@pytest.fixture
def browser() -> Iterator:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium "
                    "chromium-driver; .ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-extensions",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def wait_text(driver, css: str, wanted: str, timeout_s: float = PAGE_WAIT_S) -> str:
    return str(wait_for(lambda: wanted in text_of(driver, css) and text_of(driver, css),
                        timeout_s, f"{css!r} to show {wanted!r}"))


def open_page(driver, console: ConsoleProcess, route: str, loaded: str) -> None:
    driver.execute_script("if (document.body) document.body.dataset.loaded = '';")
    driver.get(f"{console.url}/#/{route}")
    wait_for(lambda: driver.execute_script("return document.body.dataset.loaded") == loaded,
             PAGE_WAIT_S, f"page {route}")


def shot(driver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def test_the_console_in_a_browser(cluster_factory, tmp_path, browser):
    from selenium.webdriver.common.by import By

    cluster = cluster_factory(3)
    cluster.start()
    cluster.wait_ready()
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topic("orders", num_partitions=3, replication_factor=3)
        cluster_id = admin.describe_cluster().cluster_id
    with Producer(bootstrap_servers=cluster.bootstrap) as producer:
        producer.send("orders", value=json.dumps({"from": "sdk", "n": 1}).encode(),
                      key=b"sdk-key", partition=0, headers=[("trace", b"abc")])
        producer.flush()
    console = ConsoleProcess(cluster.bootstrap, tmp_path / "console.log",
                             metrics=[f"127.0.0.1:{cluster.brokers[i].metrics_port}"
                                      for i in (1, 2, 3)])
    try:
        driver = browser
        # Overview
        open_page(driver, console, "overview", "overview")
        wait_text(driver, "#cluster-id", cluster_id)
        assert text_of(driver, "#alive-count").endswith("3")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#brokers tbody tr")) == 3
        shot(driver, "overview")

        # Topics: list, create from the UI
        open_page(driver, console, "topics", "topics")
        wait_text(driver, "#topics", "orders")
        form = driver.find_element(By.ID, "create-topic")
        form.find_element(By.NAME, "tname").send_keys("from-ui")
        form.find_element(By.NAME, "partitions").clear()
        form.find_element(By.NAME, "partitions").send_keys("2")
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait_text(driver, "#topics", "from-ui")
        shot(driver, "topics")
        with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            assert len(admin.describe_topic("from-ui").partitions) == 2

        # A topic's partitions
        open_page(driver, console, "topics/orders", "topics")
        rows = driver.find_elements(By.CSS_SELECTOR, "#partitions tbody tr")
        assert len(rows) == 3
        assert all(sorted(row.text.split()[3].strip("[]").split(",")) == ["1", "2", "3"]
                   for row in rows), [row.text for row in rows]  # replicas
        shot(driver, "topic")

        # Messages: the SDK's record shows; a record produced here is read back by the SDK
        open_page(driver, console, "messages/orders/0", "messages")
        wait_text(driver, "#messages", '"from": "sdk"')
        assert "sdk-key" in text_of(driver, "#messages") and "trace=abc" in text_of(
            driver, "#messages")
        produce = driver.find_element(By.ID, "produce")
        produce.find_element(By.NAME, "ppartition").send_keys("1")
        produce.find_element(By.NAME, "key").send_keys("ui-key")
        produce.find_element(By.NAME, "pvalue").send_keys("hello from the browser")
        produce.find_element(By.NAME, "headers").send_keys("origin=ui")
        produce.find_element(By.CSS_SELECTOR, "button").click()
        wait_text(driver, "#produced", "orders-1@")
        shot(driver, "messages")
        consumer = Consumer(bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest")
        consumer.assign([TopicPartition("orders", 1)])
        found: list = []
        wait_for(lambda: found.extend(r for rs in consumer.poll(timeout_ms=200).values()
                                      for r in rs) or found, 10, "the browser's record")
        consumer.close()
        assert (found[0].key, found[0].value) == (b"ui-key", b"hello from the browser")
        assert list(found[0].headers) == [("origin", b"ui")]


        # Consumer groups: a group's lag appears and goes to 0
        group = Consumer(bootstrap_servers=cluster.bootstrap, group_id="browser-g",
                         auto_offset_reset="earliest", enable_auto_commit=False)
        group.subscribe(["orders"])
        seen = 0

        def consumed() -> bool:
            nonlocal seen
            seen += sum(len(r) for r in group.poll(timeout_ms=200).values())
            return seen >= 2

        wait_for(consumed, 30, "the group to read both records")
        group.commit({TopicPartition("orders", 0): 0})  # one record behind on partition 0
        open_page(driver, console, "groups", "groups")
        wait_text(driver, "#groups", "browser-g")
        open_page(driver, console, "groups/browser-g", "groups")
        wait_text(driver, "#total-lag", "1")
        group.commit()
        wait_text(driver, "#total-lag", "0", timeout_s=PAGE_WAIT_S + 5)
        # the lag chart drew the 1 and then the 0 (history kept across the page's refreshes)
        assert float(driver.find_element(By.ID, "chart-lag").get_attribute("data-max")) >= 1
        assert text_of(driver, "#chart-lag-legend").endswith("lag 0")
        shot(driver, "group")
        group.close()

        # Messages: live tail: a record produced with the SDK appears without a reload
        open_page(driver, console, "messages/orders/2", "messages")
        driver.find_element(By.ID, "tail-toggle").click()
        wait_for(lambda: driver.execute_script(
            "return document.getElementById('tail-status').dataset.ready") == "1",
            PAGE_WAIT_S, "the live tail to start")
        with Producer(bootstrap_servers=cluster.bootstrap) as producer:
            producer.send("orders", value=b"tailed from the sdk", key=b"tail-key", partition=2)
            producer.flush()
        wait_text(driver, "#tail-records", "tailed from the sdk")
        assert "tail-key" in text_of(driver, "#tail-records")
        shot(driver, "messages-tail")

        # Overview: the throughput chart shows the records produced (read from /metrics)
        open_page(driver, console, "overview", "overview")
        busy = Producer(bootstrap_servers=cluster.bootstrap)

        def chart_moved() -> bool:
            for i in range(20):
                busy.send("orders", value=b"chart %d" % i)
            busy.flush()
            maxima = driver.execute_script(
                "const c = document.getElementById('chart-records');"
                "const b = document.getElementById('chart-bytes');"
                "return c && b ? [Number(c.dataset.max), Number(b.dataset.max)] : null")
            return bool(maxima) and maxima[0] > 0 and maxima[1] > 0

        wait_for(chart_moved, 30, "the throughput chart to show records/s and bytes/s")
        busy.close()
        assert driver.find_elements(By.CSS_SELECTOR, "#chart-records polyline")
        shot(driver, "overview-throughput")

        # Live: a killed broker shows as fenced and a leader moves, within seconds
        open_page(driver, console, "live", "live")
        wait_text(driver, "#events", "watching cluster")
        controller = int(console.get("overview")[1]["controller"])
        leaders = {p["leader"] for p in console.get("topics/orders")[1]["partitions"]}
        victim = next(i for i in (1, 2, 3) if i != controller and i in leaders)
        killed_at = time.monotonic()
        cluster.brokers[victim].kill()
        wait_text(driver, f'#live-brokers tr[data-broker="{victim}"]', "fenced",
                  FAILOVER_SHOWN_WITHIN_S)
        wait_text(driver, "#events", f"(was {victim})", FAILOVER_SHOWN_WITHIN_S)
        shown_after_s = time.monotonic() - killed_at
        assert "LEADER of" in text_of(driver, "#events")
        shot(driver, "live")
        open_page(driver, console, "overview", "overview")
        wait_text(driver, "#fenced-count", "1")
        shot(driver, "overview-broker-down")
        print(f"killed broker {victim}: fenced and leader move shown after {shown_after_s:.1f}s")

        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        console.stop()


# Full page loads in a row: more than a browser's 6 connections to one host.
RELOADS = 8


def test_message_pages_and_reloads(cluster_factory, tmp_path, browser):
    """The message browser shows one page of a partition and steps to older and newer
    pages by offset; and reloading the console again and again does not leave the next
    page's API calls queued behind the streams of the pages left (each page's live-event
    stream is closed when it is hidden: Chromium kept them for about a minute)."""
    from selenium.webdriver.common.by import By

    cluster = cluster_factory(1)
    cluster.start()
    cluster.wait_ready()
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topic("deep", num_partitions=1, replication_factor=1)
    with Producer(bootstrap_servers=cluster.bootstrap) as producer:
        for i in range(120):
            producer.send("deep", value=b"record %d" % i, partition=0)
        producer.flush()
    console = ConsoleProcess(cluster.bootstrap, tmp_path / "console.log")
    try:
        driver = browser

        def offsets() -> list[int]:
            return [int(row.get_attribute("data-offset")) for row in
                    driver.find_elements(By.CSS_SELECTOR, "#messages tbody tr[data-offset]")]

        def step(button: str, first: int) -> None:
            driver.execute_script("document.body.dataset.loaded = ''")
            driver.find_element(By.ID, button).click()
            wait_for(lambda: offsets()[:1] == [first], PAGE_WAIT_S, f"the page from {first}")

        open_page(driver, console, "messages/deep/0?from=earliest&limit=50", "messages")
        assert offsets() == list(range(50))
        assert driver.find_element(By.ID, "older").get_attribute("disabled") is not None
        step("newer", 50)
        assert offsets() == list(range(50, 100))
        step("newer", 100)
        assert offsets() == list(range(100, 120))
        assert driver.find_element(By.ID, "newer").get_attribute("disabled") is not None
        step("older", 50)
        assert offsets() == list(range(50, 100))

        for i in range(RELOADS):
            driver.get("about:blank")
            started = time.monotonic()
            open_page(driver, console, "topics", "topics")
            assert "deep" in text_of(driver, "#topics"), f"reload {i + 1}"
            print(f"reload {i + 1}: {time.monotonic() - started:.2f} s")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        console.stop()
