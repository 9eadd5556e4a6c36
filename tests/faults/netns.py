"""A private network for one fault run: a namespace per broker joined by a bridge.

Layout (N is claimed per run, see `claim_subnet`):

    root ns   <prefix>c  10.213.N.254/24 --+
                                            |     switch ns <prefix>sw
    <prefix>b1  eth0  10.213.N.1/24  ------ s1 --+
    <prefix>b2  eth0  10.213.N.2/24  ------ s2 --+-- br0 (Linux bridge, no address)
    <prefix>b3  eth0  10.213.N.3/24  ------ s3 --+
                                            c ---+  (the root namespace's veth)

Brokers reach one another over the bridge alone: the root namespace is one more host on the
switch (the test's clients and the nemesis's admin calls), never a router between brokers.
Broker namespaces have no route beyond their /24, so nothing they send can leave the
machine. The root namespace holds an `unreachable 10.213.N.0/24` route (metric 9999) from
before the veth exists until after it is gone: should a client still be retrying while the
veth is deleted, its packets are refused locally instead of following the default route.

Faults are made with plain iproute2 (no iptables, no tc actions, no netem: this kernel has
none of them):

* cut A -> B (one way, silent): in B's namespace `ip rule add pref 10 from A iif eth0
  blackhole`. A packet from A arriving at B is routed to a blackhole and dropped without a
  word, as `iptables -A INPUT -s A -j DROP` on B would; B's own packets to A still go out.
  (The namespace's `lookup local` rule is moved from pref 0 to pref 100 at setup, so that
  pref 10 is consulted first.)
* partition {A..} | {B..}: a cut each way for every pair across the two sides.
* link down: `ip link set eth0 down` in the broker's namespace (it loses every peer and
  the clients too; sends fail at once with ENETUNREACH).

Everything created is recorded and removed by `close()`, which never raises and is safe to
call twice; <prefix> is rfk<pid>n<k> (the creating pid, a counter), so parallel runs do not clash.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field

log = logging.getLogger("raftka.faults.netns")

SUBNET_FIRST_OCTETS = "10.213"
_NETWORKS = itertools.count()
CLIENT_HOST = 254
GUARD_METRIC = 9999
CUT_PREF = 10
LOCAL_PREF = 100


class NetnsUnavailableError(RuntimeError):
    """This machine cannot make the network (not root, no `ip`, no namespaces)."""


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One `ip` command; raises with its stderr when `check` and it fails."""
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=20, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can (tried for real:
    a throw-away namespace is created and deleted)."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"rfkprobe{os.getpid()}"
    try:
        made = run_ip("netns", "add", name, check=False)
        if made.returncode != 0:
            return f"cannot create a network namespace: {made.stderr.strip()}"
        rule = run_ip("-n", name, "rule", "add", "pref", "10", "from", "10.213.0.1",
                      "iif", "lo", "blackhole", check=False)
        if rule.returncode != 0:
            return f"cannot add a blackhole routing rule: {rule.stderr.strip()}"
        return None
    finally:
        run_ip("netns", "del", name, check=False)


def claim_subnet(pid: int) -> int:
    """A third octet N for 10.213.N.0/24 that no other run holds, claimed by adding the
    root namespace's guard route (adding it fails with 'File exists' when taken)."""
    start = pid % 250 + 1
    for step in range(250):
        octet = (start + step - 1) % 250 + 1
        network = f"{SUBNET_FIRST_OCTETS}.{octet}.0/24"
        if run_ip("-4", "route", "show", "root", network).stdout.strip():
            continue
        if run_ip("-4", "addr", "show", "to", network).stdout.strip():
            continue
        added = run_ip("route", "add", "unreachable", network, "metric", str(GUARD_METRIC),
                       check=False)
        if added.returncode == 0:
            return octet
    raise RuntimeError("no free 10.213.N.0/24 subnet for the fault network")


@dataclass
class Cut:
    """Packets from `source` are dropped on arrival at `target` (broker ids)."""

    source: int
    target: int


@dataclass
class FaultNetwork:
    """The namespaces, bridge and veths of one run, and the cuts currently in force."""

    broker_ids: list[int]
    prefix: str = field(default_factory=lambda: f"rfk{os.getpid()}n{next(_NETWORKS)}")
    octet: int = 0
    cuts: list[Cut] = field(default_factory=list)
    links_down: set[int] = field(default_factory=set)
    # Every fault command run (argv joined), oldest first: the nemesis quotes them.
    journal: list[str] = field(default_factory=list)
    _namespaces: list[str] = field(default_factory=list)
    _root_veth: str = ""
    _guard: str = ""
    guard_kept: bool = False

    # --------------------------------------------------------------------- addresses
    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}sw"

    def namespace(self, broker_id: int) -> str:
        return f"{self.prefix}b{broker_id}"

    def address(self, broker_id: int) -> str:
        return f"{SUBNET_FIRST_OCTETS}.{self.octet}.{broker_id}"

    @property
    def client_address(self) -> str:
        return f"{SUBNET_FIRST_OCTETS}.{self.octet}.{CLIENT_HOST}"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"{SUBNET_FIRST_OCTETS}.{self.octet}.0/24")

    # ------------------------------------------------------------------------ set up
    def create(self) -> None:
        """Build the whole layout; on any error, undo what was made and raise."""
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        self.octet = claim_subnet(os.getpid())
        self._guard = str(self.network)
        sw = self.switch_ns
        self._add_namespace(sw)
        run_ip("-n", sw, "link", "add", "br0", "type", "bridge")
        run_ip("-n", sw, "link", "set", "br0", "up")
        for broker_id in self.broker_ids:
            ns = self.namespace(broker_id)
            self._add_namespace(ns)
            port = f"s{broker_id}"
            # Both ends are made inside namespaces: the root namespace never holds them.
            run_ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                   "netns", ns)
            run_ip("-n", sw, "link", "set", port, "master", "br0", "up")
            run_ip("-n", ns, "addr", "add", f"{self.address(broker_id)}/24", "dev", "eth0")
            run_ip("-n", ns, "link", "set", "eth0", "up")
            run_ip("-n", ns, "link", "set", "lo", "up")
            # Move `lookup local` behind the cut rules (added first, so never a gap).
            run_ip("-n", ns, "rule", "add", "pref", str(LOCAL_PREF), "lookup", "local")
            run_ip("-n", ns, "rule", "del", "pref", "0", "lookup", "local")
        self._root_veth = f"{self.prefix}c"
        run_ip("link", "add", self._root_veth, "type", "veth", "peer", "name", "c",
               "netns", sw)
        run_ip("-n", sw, "link", "set", "c", "master", "br0", "up")
        run_ip("addr", "add", f"{self.client_address}/24", "dev", self._root_veth)
        run_ip("link", "set", self._root_veth, "up")

    def _add_namespace(self, name: str) -> None:
        run_ip("netns", "add", name)
        self._namespaces.append(name)

    def command_prefix(self, broker_id: int) -> list[str]:
        """Run a command inside the broker's namespace (`ip netns exec` execs it: the
        child's pid is the command's own)."""
        return ["ip", "netns", "exec", self.namespace(broker_id)]

    # ------------------------------------------------------------------------ faults
    def _fault_ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.journal.append("ip " + " ".join(args))
        return run_ip(*args, check=check)

    def cut(self, source: int, target: int) -> None:
        """Drop packets from `source` on arrival at `target` (one way)."""
        self._fault_ip("-n", self.namespace(target), "rule", "add", "pref", str(CUT_PREF),
               "from", self.address(source), "iif", "eth0", "blackhole")
        self.cuts.append(Cut(source, target))

    def partition(self, side_a: list[int], side_b: list[int]) -> None:
        for a in side_a:
            for b in side_b:
                self.cut(a, b)
                self.cut(b, a)

    def link_down(self, broker_id: int) -> None:
        self._fault_ip("-n", self.namespace(broker_id), "link", "set", "eth0", "down")
        self.links_down.add(broker_id)

    def heal(self) -> None:
        """Remove every cut and bring every link up; raises if something stays broken."""
        problems: list[str] = []
        for cut in list(self.cuts):
            result = self._fault_ip("-n", self.namespace(cut.target), "rule", "del", "pref",
                            str(CUT_PREF), "from", self.address(cut.source), "iif", "eth0",
                            "blackhole", check=False)
            if result.returncode != 0:
                problems.append(result.stderr.strip())
            self.cuts.remove(cut)
        for broker_id in sorted(self.links_down):
            result = self._fault_ip("-n", self.namespace(broker_id), "link", "set", "eth0", "up",
                            check=False)
            if result.returncode != 0:
                problems.append(result.stderr.strip())
            self.links_down.discard(broker_id)
        leftovers = [b for b in self.broker_ids if self._cut_rules(b)]
        if leftovers:
            problems.append(f"cut rules remain in brokers {leftovers}")
        if problems:
            raise RuntimeError("heal failed: " + "; ".join(problems))

    def _cut_rules(self, broker_id: int) -> list[str]:
        listed = run_ip("-n", self.namespace(broker_id), "rule", "show", check=False).stdout
        return [line for line in listed.splitlines() if line.startswith(f"{CUT_PREF}:")]

    # ---------------------------------------------------------------------- clean up
    def client_sockets(self) -> list[str]:
        """TCP sockets of the root namespace towards this run's subnet that can still send
        (TIME-WAIT ones cannot)."""
        if not self._guard:
            return []
        try:
            listed = subprocess.run(
                ["ss", "-H", "-tn", "state", "all", "dst", self._guard],
                capture_output=True, text=True, timeout=20, check=False,
            ).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            # cannot tell: report one, so that the guard route is kept rather than dropped
            return [f"ss failed: {exc}"]
        return [line for line in listed.splitlines()
                if line.strip() and not line.startswith("TIME-WAIT")]

    def close(self, socket_grace_s: float = 15.0) -> None:
        """Delete the root veth, every namespace (their veths go with them) and, last, the
        guard route. Never raises; call it after the processes inside have been stopped and
        the clients closed. The guard route stays (and `guard_kept` says so) while some
        socket of this process still points into the subnet: deleting it then could let
        that socket's packets follow the default route off the machine."""
        deadline = time.monotonic() + socket_grace_s
        while self.client_sockets() and time.monotonic() < deadline:
            time.sleep(0.5)
        if self._root_veth:
            run_ip("link", "del", self._root_veth, check=False)
            self._root_veth = ""
        for name in reversed(self._namespaces):
            result = run_ip("netns", "del", name, check=False)
            if result.returncode != 0:
                log.warning("could not delete namespace %s: %s", name, result.stderr.strip())
        self._namespaces.clear()
        if self._guard:
            remaining = self.client_sockets()
            if remaining:
                self.guard_kept = True
                log.warning("keeping the route 'unreachable %s': sockets still open: %s",
                            self._guard, remaining[:3])
                return
            with contextlib.suppress(Exception):
                run_ip("route", "del", "unreachable", self._guard, "metric", str(GUARD_METRIC),
                       check=False)
            self._guard = ""

    def __enter__(self) -> FaultNetwork:
        self.create()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
