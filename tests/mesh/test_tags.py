"""Feature tags: the characters and length a client may use, and the cap on distinct tags booked."""

from __future__ import annotations

import pytest

from errors import InvalidArgument
from mesh.tags import MAX_TAG_BYTES, OTHER, UNTAGGED, TagBook, check_feature_tag


@pytest.mark.parametrize("tag", ["", "home", "post-writer", "v1.feed_top", "x" * MAX_TAG_BYTES])
def test_short_tags_of_lower_case_letters_digits_and_punctuation_pass(tag: str) -> None:
    check_feature_tag(tag)


@pytest.mark.parametrize("tag", ["x" * (MAX_TAG_BYTES + 1), "Home", "a b", "tag\n", "ünïcode", "a{b}", "é" * 40])
def test_any_other_tag_is_invalid_argument_naming_the_field(tag: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_feature_tag(tag)
    assert caught.value.field == "context.feature_tag"


def test_the_book_keeps_known_tags_and_books_new_ones_past_the_cap_as_other() -> None:
    book = TagBook(capacity=2)
    assert [book.book(t) for t in ("a", "", "b", "a", UNTAGGED)] == ["a", UNTAGGED, OTHER, "a", UNTAGGED]
