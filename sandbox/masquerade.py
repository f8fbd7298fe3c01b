"""Masquerading of pycri's default pod network: one rule set for the whole subnet, as docker does.

The CNI bridge plugin's `ipMasq` makes, at every pod's ADD, a nat chain of that pod's own
(`CNI-<hash of network and container id>`: `-d <subnet> -j ACCEPT`, `! -d 224.0.0.0/4 -j
MASQUERADE`) and a POSTROUTING jump for the pod's address, and takes them down at DEL: about eight
iptables runs each way, most of a pod's network set-up. pycri's default network
(default_network.py) has `ipMasq` false instead, and pycri masquerades its subnet once, with the
same effect, in the nat table:

    -N PYCRI-MASQ-<first 8 hex digits of sha256(name + subnet)>
    -A PYCRI-MASQ-... -d <subnet> -j RETURN         (pod to pod, pod to gateway: untouched)
    -A PYCRI-MASQ-... -d 224.0.0.0/4 -j RETURN      (multicast on the local network: untouched)
    -A PYCRI-MASQ-... -j MASQUERADE                 (everything else leaves with the host's address)
    -A POSTROUTING -s <subnet> -m comment --comment "pycri <name> masquerade" -j PYCRI-MASQ-...

`ensure()` makes that idempotently: a chain with exactly those rules in that order is left alone,
one with other content is flushed and rebuilt, and the jump is checked (`-C`) before it is
appended, so a restarted daemon adds nothing twice. RETURN rather than the plugin's ACCEPT lets
later POSTROUTING rules (kube-proxy's, portmap's) still see pod-to-pod traffic. The rules stay
when pycri stops (docker's do too); `remove()` takes them down (the benchmarks' own networks).

Only the default network as pycri writes it gets this (sandbox/cni_network.py decides); any other
network list is the user's, masqueraded (or not) by its own plugins. A default conflist written
by an older pycri has `"ipMasq": true` and keeps working as it did, with the plugin's per-pod
chains; deleting the file (/etc/cni/net.d/10-pycri-bridge.conflist) while no pod runs makes
pycri write the new one. IPv4 only: the default network has no IPv6 range.

iptables runs through a narrow `Runner` (`IptablesRunner`: `iptables -w ...`); unit tests give a
fake. When iptables is missing or fails, `ensure()` raises `MasqueradeError`; the caller logs it
(pods still get their addresses; traffic leaving the host is what is not NATed).
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from pycri.common.errors import Unavailable

log = structlog.get_logger("sandbox.masquerade")

TABLE = "nat"
CHAIN_PREFIX = "PYCRI-MASQ-"
MULTICAST_V4 = "224.0.0.0/4"
TIMEOUT = 60.0
# where iptables lives when the daemon's PATH lacks the sbin directories
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")  # a CNI network name (sandbox/cni.py)


class MasqueradeError(Unavailable):
    """iptables is missing or refused a command: the pods' traffic out of the host is not NATed."""


@dataclass(frozen=True)
class Outcome:
    """What one iptables run gave."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


class Runner(Protocol):
    """Runs `iptables -w <args>` and says how it ended."""

    def __call__(self, args: Sequence[str]) -> Outcome: ...


class IptablesRunner:
    """The real runner: `iptables -w` (wait for the xtables lock) as a subprocess."""

    def __init__(self, binary: str = "iptables", timeout: float = TIMEOUT) -> None:
        self.binary = binary
        self.timeout = timeout

    def __call__(self, args: Sequence[str]) -> Outcome:
        path = shutil.which(self.binary) or shutil.which(self.binary, path=SBIN_PATH)
        if path is None:
            raise MasqueradeError(f"{self.binary} not found on PATH ({os.environ.get('PATH', '')}) or in {SBIN_PATH}")
        try:
            done = subprocess.run([path, "-w", *args], capture_output=True, text=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL, close_fds=True)
        except subprocess.TimeoutExpired:
            raise MasqueradeError(f"{self.binary} {' '.join(args)}: no answer in {self.timeout:g} s") from None
        except OSError as exc:
            raise MasqueradeError(f"cannot run {path}: {exc}") from None
        return Outcome(done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class Masquerade:
    """The rule set of one network: its chain, the chain's rules, the POSTROUTING jump."""

    name: str
    subnet: str  # normalized, e.g. 10.88.0.0/16

    @property
    def chain(self) -> str:
        return chain_name(self.name, self.subnet)

    @property
    def comment(self) -> str:
        return f"pycri {self.name} masquerade"

    def chain_rules(self) -> list[list[str]]:
        return [["-d", self.subnet, "-j", "RETURN"], ["-d", MULTICAST_V4, "-j", "RETURN"], ["-j", "MASQUERADE"]]

    def jump(self) -> list[str]:
        return ["-s", self.subnet, "-m", "comment", "--comment", self.comment, "-j", self.chain]

    def listing(self) -> list[str]:
        """The chain's rules as `iptables -S <chain>` prints them."""
        return [f"-A {self.chain} {' '.join(rule)}" for rule in self.chain_rules()]


def chain_name(name: str, subnet: str) -> str:
    """PYCRI-MASQ- and the first 8 hex digits of sha256(name + subnet) (19 characters; iptables allows 28)."""
    return CHAIN_PREFIX + hashlib.sha256((name + subnet).encode()).hexdigest()[:8]


def masquerade_for(name: str, subnet: str) -> Masquerade:
    """The rule set for network `name` on `subnet` (an IPv4 CIDR, normalized: 10.88.0.1/16 is 10.88.0.0/16)."""
    if not _NAME.match(name):
        raise MasqueradeError(f"invalid network name {name!r}")
    try:
        network = ipaddress.ip_network(subnet, strict=False)
    except ValueError as exc:
        raise MasqueradeError(f"invalid subnet {subnet!r}: {exc}") from None
    if network.version != 4:
        raise MasqueradeError(f"subnet {subnet}: pycri masquerades IPv4 subnets only")
    return Masquerade(name, str(network))


def ensure(name: str, subnet: str, run: Runner | None = None) -> bool:
    """Make the masquerade rule set of network `name` on `subnet`; True when anything changed.

    Raises MasqueradeError when iptables is missing or refuses a command."""
    masq = masquerade_for(name, subnet)
    run = run or IptablesRunner()
    chain = masq.chain
    changed = False
    listed = run(["-t", TABLE, "-S", chain])
    if listed.returncode == 0:
        present = [line for line in listed.stdout.splitlines() if line.startswith("-A ")]
        rebuild = present != masq.listing()
        if rebuild:
            log.warning("the masquerade chain has other rules: rebuilding it", chain=chain, rules=present)
            checked(run, ["-t", TABLE, "-F", chain])
    else:  # no such chain (iptables-nft says so in words of its own: any failure here counts as missing)
        checked(run, ["-t", TABLE, "-N", chain])
        rebuild = True
    if rebuild:
        for rule in masq.chain_rules():
            checked(run, ["-t", TABLE, "-A", chain, *rule])
        changed = True
    check = run(["-t", TABLE, "-C", "POSTROUTING", *masq.jump()])
    if check.returncode == 1:  # iptables -C: 1 when there is no such rule
        checked(run, ["-t", TABLE, "-A", "POSTROUTING", *masq.jump()])
        changed = True
    elif check.returncode != 0:
        raise iptables_error(["-t", TABLE, "-C", "POSTROUTING", *masq.jump()], check)
    if changed:
        log.info("masquerading the pod network's traffic out of the host", network=name, subnet=masq.subnet,
                 chain=chain)
    return changed


def remove(name: str, subnet: str, run: Runner | None = None) -> bool:
    """Take the rule set of `name` on `subnet` down (the jump, then the chain); True when any was there."""
    masq = masquerade_for(name, subnet)
    run = run or IptablesRunner()
    removed = False
    for _ in range(16):  # every copy of the jump (one, unless someone added more)
        if run(["-t", TABLE, "-D", "POSTROUTING", *masq.jump()]).returncode != 0:
            break
        removed = True
    if run(["-t", TABLE, "-S", masq.chain]).returncode == 0:
        checked(run, ["-t", TABLE, "-F", masq.chain])
        checked(run, ["-t", TABLE, "-X", masq.chain])
        removed = True
    return removed


def checked(run: Runner, args: list[str]) -> Outcome:
    """iptables `args` through `run`; its outcome, or MasqueradeError with what it said."""
    outcome = run(args)
    if outcome.returncode != 0:
        raise iptables_error(args, outcome)
    return outcome


def iptables_error(args: list[str], outcome: Outcome) -> MasqueradeError:
    detail = (outcome.stderr or outcome.stdout).strip()[-500:] or "(no output)"
    return MasqueradeError(f"iptables -w {' '.join(args)} failed with status {outcome.returncode}: {detail}")
