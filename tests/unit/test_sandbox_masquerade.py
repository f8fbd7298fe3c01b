"""The default network's masquerade (sandbox/masquerade.py) against a fake iptables: a small
model of the nat table that records every command it is given."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from pycri.sandbox import masquerade
from pycri.sandbox.masquerade import Outcome

SUBNET = "10.88.0.0/16"
CHAIN = "PYCRI-MASQ-" + hashlib.sha256(b"pycri10.88.0.0/16").hexdigest()[:8]
JUMP = ["-s", SUBNET, "-m", "comment", "--comment", "pycri pycri masquerade", "-j", CHAIN]
CHAIN_RULES = [["-d", SUBNET, "-j", "RETURN"], ["-d", "224.0.0.0/4", "-j", "RETURN"], ["-j", "MASQUERADE"]]
BUILTIN = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")


class FakeIptables:
    """The nat table as iptables -w shows and changes it: -S, -N, -F, -X, -A, -C, -D."""

    def __init__(self) -> None:
        self.chains: dict[str, list[list[str]]] = {name: [] for name in BUILTIN}
        self.calls: list[list[str]] = []
        self.fail: dict[str, Outcome] = {}  # an operation ("-A", ...) that fails with this outcome

    def __call__(self, args: Sequence[str]) -> Outcome:
        args = list(args)
        self.calls.append(args)
        assert args[:2] == ["-t", "nat"], args
        op, chain, rule = args[2], args[3], args[4:]
        if op in self.fail:
            return self.fail[op]
        rules = self.chains.get(chain)
        if rules is None and op != "-N":
            return Outcome(1, "", f"iptables: chain `{chain}' in table `nat' is incompatible, use 'nft' tool.\n")
        assert rules is not None or op == "-N"
        if op == "-S":
            head = f"-P {chain} ACCEPT" if chain in BUILTIN else f"-N {chain}"
            return Outcome(0, "\n".join([head] + [f"-A {chain} " + " ".join(_quoted(r)) for r in rules or []]) + "\n")
        if op == "-N":
            if rules is not None:
                return Outcome(1, "", "iptables: Chain already exists.\n")
            self.chains[chain] = []
        elif op == "-F":
            rules.clear()  # type: ignore[union-attr]
        elif op == "-X":
            if rules:
                return Outcome(1, "", "iptables: Directory not empty.\n")
            del self.chains[chain]
        elif op == "-A":
            rules.append(rule)  # type: ignore[union-attr]
        elif op in ("-C", "-D"):
            if rule not in rules:  # type: ignore[operator]
                return Outcome(1, "", "iptables: Bad rule (does a matching rule exist in that chain?).\n")
            if op == "-D":
                rules.remove(rule)  # type: ignore[union-attr]
        else:
            raise AssertionError(f"unexpected iptables command {args}")
        return Outcome(0)

    def writes(self) -> list[list[str]]:
        return [c for c in self.calls if c[2] not in ("-S", "-C")]


def _quoted(rule: list[str]) -> list[str]:
    return [f'"{a}"' if " " in a else a for a in rule]


def test_the_first_ensure_makes_the_chain_and_the_jump() -> None:
    iptables = FakeIptables()
    assert masquerade.ensure("pycri", SUBNET, iptables) is True
    assert iptables.chains[CHAIN] == CHAIN_RULES
    assert iptables.chains["POSTROUTING"] == [JUMP]
    assert iptables.calls == [
        ["-t", "nat", "-S", CHAIN], ["-t", "nat", "-N", CHAIN],
        *[["-t", "nat", "-A", CHAIN, *rule] for rule in CHAIN_RULES],
        ["-t", "nat", "-C", "POSTROUTING", *JUMP], ["-t", "nat", "-A", "POSTROUTING", *JUMP],
    ]


def test_a_second_ensure_only_reads() -> None:
    iptables = FakeIptables()
    masquerade.ensure("pycri", SUBNET, iptables)
    before = {k: [list(r) for r in v] for k, v in iptables.chains.items()}
    iptables.calls.clear()
    assert masquerade.ensure("pycri", SUBNET, iptables) is False  # a restarted daemon
    assert iptables.chains == before
    assert iptables.calls == [["-t", "nat", "-S", CHAIN], ["-t", "nat", "-C", "POSTROUTING", *JUMP]]


@pytest.mark.parametrize("content", [
    [],  # made, then the daemon died before the rules
    [["-j", "MASQUERADE"]],
    [["-j", "MASQUERADE"], ["-d", SUBNET, "-j", "RETURN"], ["-d", "224.0.0.0/4", "-j", "RETURN"]],  # wrong order
    [*CHAIN_RULES, ["-j", "MASQUERADE"]],  # a rule too many
    [["-d", "10.99.0.0/16", "-j", "RETURN"], *CHAIN_RULES[1:]],  # another subnet's
])
def test_a_chain_with_other_rules_is_rebuilt(content: list[list[str]]) -> None:
    iptables = FakeIptables()
    iptables.chains[CHAIN] = [list(r) for r in content]
    iptables.chains["POSTROUTING"] = [JUMP]
    assert masquerade.ensure("pycri", SUBNET, iptables) is True
    assert iptables.chains[CHAIN] == CHAIN_RULES
    assert iptables.chains["POSTROUTING"] == [JUMP]  # the jump was there: not added twice
    assert iptables.writes() == [["-t", "nat", "-F", CHAIN], *[["-t", "nat", "-A", CHAIN, *r] for r in CHAIN_RULES]]


def test_a_missing_jump_is_added_to_a_good_chain() -> None:
    iptables = FakeIptables()
    iptables.chains[CHAIN] = [list(r) for r in CHAIN_RULES]
    other = ["-s", "10.1.0.0/16", "-j", "MASQUERADE"]
    iptables.chains["POSTROUTING"] = [other]
    assert masquerade.ensure("pycri", SUBNET, iptables) is True
    assert iptables.chains["POSTROUTING"] == [other, JUMP]
    assert iptables.writes() == [["-t", "nat", "-A", "POSTROUTING", *JUMP]]


def test_the_chain_name_and_comment() -> None:
    masq = masquerade.masquerade_for("pycri", "10.88.7.1/16")  # normalized to the network
    assert masq.subnet == SUBNET and masq.chain == CHAIN and len(CHAIN) == 19
    assert masq.comment == "pycri pycri masquerade"
    assert masquerade.chain_name("other", SUBNET) != CHAIN
    assert masquerade.chain_name("pycri", "10.89.0.0/16") != CHAIN
    assert masq.jump() == JUMP
    assert masq.listing() == [f"-A {CHAIN} -d {SUBNET} -j RETURN", f"-A {CHAIN} -d 224.0.0.0/4 -j RETURN",
                              f"-A {CHAIN} -j MASQUERADE"]


@pytest.mark.parametrize(("name", "subnet", "message"), [
    ("pycri", "fd00::/64", "IPv4 subnets only"),
    ("pycri", "10.88.0.0/33", "invalid subnet"),
    ('py"cri', SUBNET, "invalid network name"),
])
def test_what_cannot_be_masqueraded_is_refused_before_iptables_runs(name: str, subnet: str, message: str) -> None:
    iptables = FakeIptables()
    with pytest.raises(masquerade.MasqueradeError, match=message):
        masquerade.ensure(name, subnet, iptables)
    assert iptables.calls == []


def test_an_iptables_failure_is_a_clear_error() -> None:
    iptables = FakeIptables()
    iptables.fail["-A"] = Outcome(4, "", "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id\n")
    with pytest.raises(masquerade.MasqueradeError, match=r"-A PYCRI-MASQ-\w+ -d 10.88.0.0/16 -j RETURN failed with "
                                                         r"status 4: .*rule set generation id"):
        masquerade.ensure("pycri", SUBNET, iptables)
    iptables = FakeIptables()
    iptables.fail["-C"] = Outcome(2, "", "iptables: something else\n")  # not "no such rule": nothing appended
    with pytest.raises(masquerade.MasqueradeError, match="something else"):
        masquerade.ensure("pycri", SUBNET, iptables)
    assert iptables.chains["POSTROUTING"] == []


def test_a_missing_iptables_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(masquerade, "SBIN_PATH", "/nonexistent")
    runner = masquerade.IptablesRunner(binary="pycri-no-such-iptables")
    with pytest.raises(masquerade.MasqueradeError, match="pycri-no-such-iptables not found"):
        masquerade.ensure("pycri", SUBNET, runner)


def test_remove_takes_down_the_jump_and_the_chain() -> None:
    iptables = FakeIptables()
    other = ["-s", "10.1.0.0/16", "-j", "MASQUERADE"]
    iptables.chains["POSTROUTING"] = [other]
    masquerade.ensure("pycri", SUBNET, iptables)
    assert masquerade.remove("pycri", SUBNET, iptables) is True
    assert iptables.chains == {**{name: [] for name in BUILTIN}, "POSTROUTING": [other]}
    assert masquerade.remove("pycri", SUBNET, iptables) is False
