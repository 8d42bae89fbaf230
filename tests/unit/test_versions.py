"""Flyway version ordering: what decides which migration runs first."""

import pytest

from polymigrate.versions import Version


def ordered(*texts: str) -> list[str]:
    return [v.text for v in sorted(Version(t) for t in texts)]


def test_numeric_not_lexical_per_part():
    assert Version("1.2.10") > Version("1.2.9")
    assert Version("1.10") > Version("1.9")
    assert ordered("1.10", "1.9", "1.2", "1.1", "1") == ["1", "1.1", "1.2", "1.9", "1.10"]


def test_underscore_and_dot_separate_alike():
    assert Version("1_2_10") == Version("1.2.10")
    assert Version("2024_01_15") < Version("2024.1.16")
    assert str(Version("1_2")) == "1.2"  # shown as Flyway shows it


def test_twelve_digit_timestamps_compare_as_numbers():
    assert Version("202401151200") < Version("202401151230") < Version("202402011000")
    # a timestamp is a huge first part: it sorts after any small major version
    assert Version("202401151200") > Version("99.99")
    # longer than 64 bits still compares numerically
    assert Version("99999999999999999999") < Version("100000000000000000000")


def test_leading_zeros_do_not_count():
    assert Version("01.002") == Version("1.2")
    assert Version("1.01") < Version("1.10")


def test_trailing_zeros_do_not_count_as_in_flyway():
    assert Version("1") == Version("1.0") == Version("1.0.0")
    assert hash(Version("1")) == hash(Version("1.0"))
    assert len({Version("2"), Version("2.0"), Version("2_0_0")}) == 1
    assert Version("1.0.1") > Version("1")


def test_compares_with_strings():
    assert Version("1.2") == "1.2.0"
    assert Version("1.2") < "1.10"


@pytest.mark.parametrize("bad", ["", "1.", ".1", "1..2", "1.a", "v1", "1-2", "1 2", "1__2"])
def test_invalid_versions_are_rejected_with_the_fix(bad):
    with pytest.raises(ValueError, match="digits separated by '.' or '_'"):
        Version(bad)
