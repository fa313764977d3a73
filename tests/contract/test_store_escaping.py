"""One escaping of names in keys (navstream.contract.keys.escape_chars), with the separators of
each key format: the formats themselves are unchanged, as the formulas they had say."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from navstream.contract.alerts import alert_marker_prefix, default_subject, marker_part
from navstream.contract.keys import escape_chars, escape_name, unescape_name

names = st.text(alphabet=st.sampled_from("ab%:/|7ACF2 é"), max_size=12) | st.text(max_size=12)
maybe = st.none() | names


@given(names)
def test_names_are_escaped_as_before(part: str) -> None:
    assert escape_name(part) == part.replace("%", "%25").replace(":", "%3A").replace("/", "%2F").replace("|", "%7C")
    assert unescape_name(escape_name(part)) == part


@given(names)
def test_once_marker_parts_are_escaped_as_before(part: str) -> None:
    assert marker_part(part) == part.replace("%", "%25").replace(":", "%3A")
    assert alert_marker_prefix(part) == "alert:" + part.replace("%", "%25").replace(":", "%3A")


@given(maybe, maybe, maybe, maybe)
def test_an_alerts_default_subject_is_escaped_as_before(
    venue: str | None, account: str | None, asset: str | None, source: str | None
) -> None:
    assert default_subject(venue, account, asset, source) == "/".join(
        (v or "").replace("%", "%25").replace("/", "%2F") for v in (venue, account, asset, source)
    )


@given(names, st.text(alphabet=":/|", max_size=3))
def test_escaped_parts_hold_no_separator(part: str, separators: str) -> None:
    escaped = escape_chars(part, separators)
    assert not any(sep in escaped for sep in separators)
