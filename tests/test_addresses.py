"""Reading a domain's external addresses: plain lists and Postfix virtual/alias maps."""

from __future__ import annotations

from pathlib import Path

from mailmove.base.addresses import logical_lines, read_addresses

DOMAIN = "chem.example.org"


def read(tmp_path: Path, text: str, domain: str = DOMAIN):
    path = tmp_path / "addresses"
    path.write_text(text, encoding="utf-8")
    return read_addresses(path, domain)


def test_a_plain_list(tmp_path):
    got = read(tmp_path, "alice@chem.example.org\n\nBob@Chem.Example.org\nroot@chem.example.org\n")
    assert got.addresses == ["alice@chem.example.org", "Bob@chem.example.org"]
    assert got.internal == ["root@chem.example.org"] and not got.errors


def test_a_virtual_map_with_comments_continuations_catch_all_and_duplicates(tmp_path):
    got = read(
        tmp_path,
        "# virtual(5) of chem.example.org\n"
        "alice@chem.example.org   alice@mailbox.chem.example.org\n"
        "team@chem.example.org    alice@chem.example.org,\n"
        "                         bob@chem.example.org\n"
        "   # an indented comment\n"
        "@chem.example.org        catchall@chem.example.org\n"
        "ALICE@chem.example.org   again@chem.example.org\n"
        "lab@lab.chem.example.org lab-team\n"
        "printer@chem.example.org internal\n",
    )
    assert got.addresses == ["alice@chem.example.org", "team@chem.example.org", "lab@lab.chem.example.org"]
    assert got.catch_alls == ["@chem.example.org"] and got.duplicates == ["ALICE@chem.example.org"]
    assert got.internal == ["printer@chem.example.org"] and not got.errors


def test_an_aliases_map(tmp_path):
    got = read(tmp_path, "postmaster: root\nwebmaster:  alice, bob\nroot: admin@elsewhere.example\n")
    assert got.addresses == ["postmaster@chem.example.org", "webmaster@chem.example.org"]
    assert got.internal == ["root@chem.example.org"]


def test_bad_lines_are_reported_with_their_number(tmp_path):
    got = read(
        tmp_path,
        "alice@chem.example.org\n"
        "not an address\n"
        "bob@other.example.org\n"
        "carol@@chem.example.org\n"
        "jürgen@chem.example.org\n",
    )
    assert got.addresses == ["alice@chem.example.org"]
    assert [e.split(":")[1] for e in got.errors] == ["2", "3", "4", "5"]
    assert "is not an address of chem.example.org" in got.errors[1]
    assert "ASCII local part" in got.errors[3]


def test_idn_domains_are_kept_as_a_labels(tmp_path):
    got = read(tmp_path, "info@büro.example.org\nchef@xn--bro-hoa.example.org\n", domain="büro.example.org")
    assert got.addresses == ["info@xn--bro-hoa.example.org", "chef@xn--bro-hoa.example.org"]


def test_logical_lines():
    assert logical_lines("a b\n  c\n# x\n\nd\n\te\n") == [(1, "a b c"), (5, "d e")]


def test_an_unreadable_file(tmp_path):
    got = read_addresses(tmp_path / "missing", DOMAIN)
    assert got.errors and "cannot be read" in got.errors[0]
