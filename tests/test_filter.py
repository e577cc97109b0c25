"""incusd's filter language evaluated here (``_filter``, ``_goregexp``), without a server.

tests/_async/test_daemon_filter.py proves the same selections against a real incusd; these
pin the language's rules, the refusals' messages, and the bounds (length, time, nesting)."""

from __future__ import annotations

import random
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incus_images import Image, InvalidInputError
from incus_images._filter import MAX_FILTER_LENGTH, compile_filter, select
from incus_images._goregexp import GoRegexp, GoSyntaxError, Unsupported, equal_fold
from tests.fuzz_settings import FUZZ

DEBIAN = Image(
    fingerprint="ab" * 32,
    architecture="x86_64",
    type="container",
    size=1234,
    public=True,
    profiles=["default"],
    properties={"os": "Debian", "description": "Debian 12 bookworm", "user.note": "x"},
)
ALPINE = Image(
    fingerprint="cd" * 32,
    architecture="aarch64",
    type="virtual-machine",
    size=99,
    auto_update=True,
    properties={"os": "alpine"},
)
IMAGES = [DEBIAN, ALPINE]


def names(filter: str) -> list[str]:
    return [image.properties["os"] for image in select(IMAGES, filter)]


@pytest.mark.parametrize(
    ("filter", "selected"),
    [
        ("properties.os eq debian", ["Debian"]),
        ("properties.os eq deb", []),  # matched whole
        ("properties.os eq ^deb", ["Debian"]),  # an anchor written: matched anywhere
        ("properties.os ne debian", ["alpine"]),
        ("not properties.os eq debian", ["alpine"]),
        ("NOT properties.os eq debian", ["alpine"]),
        # No precedence: (alpine or debian) and public, not alpine or (debian and public).
        ("properties.os eq alpine or properties.os eq debian and public eq false", ["alpine"]),
        ("public eq true or type eq virtual-machine", ["Debian", "alpine"]),
        ("auto_update eq 1", ["alpine"]),
        ("architecture eq AARCH64", ["alpine"]),
        ('properties.description eq "debian 12   bookworm"', ["Debian"]),
        ("properties.user.note eq X", ["Debian"]),
        ("properties.nothing eq ^$", ["Debian", "alpine"]),
        ("size eq 1234", ["Debian"]),
        ("size ne -5", ["Debian", "alpine"]),
        ('profiles eq ["default"]', ["Debian"]),
        ("profiles eq null", ["alpine"]),
        ("fingerprint eq ^cdcd", ["alpine"]),
        (".public eq true", ["Debian"]),
        ("properties.os eq a(b", []),  # no regular expression: compared as text
        ("properties.os eq \u212alpine", []),
        (" \t ", ["Debian", "alpine"]),  # no clause: everything
    ],
)
def test_the_language(filter: str, selected: list[str]) -> None:
    assert names(filter) == selected


@pytest.mark.parametrize(
    ("filter", "problem"),
    [
        ('properties.os eq "debian"', "unterminated quote"),  # the closing quote is not seen
        ("properties.os eq debian AND public eq true", "invalid clause composition"),
        ("properties.os eq debian or", "unterminated compound clause"),
        ("properties.os eq", "clause has no value"),
        ("properties.os", "clause has no operator"),
        ("not", "incomplete not clause"),
        ("size gt 5", "Unsupported operation 'gt'"),
        ("size eq 5k", "is not an int64"),
        ("size eq 9223372036854775808", "is not an int64"),
        ("public eq yes", "is not a bool"),
        ("Properties.os eq x", 'Invalid type "invalid" for field "Properties.os"'),
        ("properties eq x", 'Invalid type "map"'),
        ("aliases eq x", 'Invalid slice type "struct"'),
        ("created_at eq x", 'Invalid type "struct"'),
        ("update_source eq x", 'Invalid type "ptr"'),
        ("profiles eq [x]", "is not JSON"),
        ("profiles eq [1]", "is not a list of text"),
        ("aliases.name eq x", "crashes"),
        ("update_source.alias eq x", "crashes"),
        ("type.x eq x", "crashes"),
        ("created_at. eq x", "crashes"),
        ("properties.os eq \\p{Greek}", "cannot be evaluated here"),
    ],
)
def test_a_filter_incusd_refuses_is_refused_naming_the_problem(filter: str, problem: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        compile_filter(filter)
    assert problem in str(caught.value)
    assert repr(filter) in str(caught.value)


def test_a_filter_is_refused_even_with_no_image_to_test() -> None:
    # incusd says nothing of an unknown field when it has no image: here it is refused anyway.
    with pytest.raises(InvalidInputError):
        select([], "nothing eq x")


@pytest.mark.parametrize("bad", ["", "a\x00 eq b", 5, None])
def test_a_filter_that_is_not_text_is_refused_as_the_client_refuses_it(bad: object) -> None:
    with pytest.raises(InvalidInputError, match="filter"):
        select(IMAGES, bad)  # type: ignore[arg-type]


def test_a_compiled_filter_is_reusable() -> None:
    matches = compile_filter("properties.os eq debian")
    assert [matches(image) for image in IMAGES * 2] == [True, False, True, False]
    assert matches.text == "properties.os eq debian"


def test_the_length_of_a_filter_is_bounded() -> None:
    clause = "properties.os eq alpine or "
    count = (MAX_FILTER_LENGTH - len("type eq x")) // len(clause)
    last = "type eq " + "x" * (MAX_FILTER_LENGTH - count * len(clause) - len("type eq "))
    longest = clause * count + last
    assert len(longest) == MAX_FILTER_LENGTH
    assert select(IMAGES, longest) == [ALPINE]
    with pytest.raises(InvalidInputError, match=f"at most {MAX_FILTER_LENGTH}"):
        select(IMAGES, longest + " ")


def test_a_catastrophic_pattern_for_backtracking_takes_linear_time() -> None:
    image = Image(fingerprint="ef" * 32, properties={"os": "a" * 5000 + "!"})
    started = time.monotonic()
    # (a+)+$ against a's and a mismatch: exponential in Python's re.
    assert select([image] * 20, "properties.os eq (a+)+b|(a|aa)*c|(.*a){20}") == []
    assert time.monotonic() - started < 5


def test_a_pattern_too_large_or_deep_to_evaluate_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="cannot be evaluated here"):
        compile_filter("properties.os eq " + "[a-z]{1000}" * 30)
    with pytest.raises(InvalidInputError, match="cannot be evaluated here"):
        compile_filter("properties.os eq " + "(" * 200 + "a" + ")" * 200)
    assert compile_filter("properties.os eq " + "(" * 50 + "a" + ")" * 50)(
        Image(fingerprint="0" * 64, properties={"os": "A"})
    )


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        ("x$", "x\n", False),  # $ is the end of the text only
        ("(?m)x$", "x\n", True),
        ("a.c", "a\nc", False),
        ("(?s)a.c", "a\nc", True),
        ("[^a]", "\n", True),
        ("\\bfoo\\b", "a foo", True),
        ("\\bfoo\\b", "afoo", False),
        ("(?i)[k]", "\u212a", True),
        ("(?i)\\W", "\u212a", False),
        ("(?i)ß", "\u1e9e", True),
        ("(?i)I", "\u0131", False),  # Go does not fold the dotless i
        ("\\Qa.b\\E", "a.b", True),
        ("\\Qa.b\\E", "axb", False),
        ("a{01}", "a{01}", True),  # a leading zero: not a count
        ("a(?i)*", "", True),  # a flags group does not end the operand
        ("\\01", "\x01", True),
        ("\\pL\\pN\\p{Lu}", "a1B", True),
        ("[[:^alpha:]]", "a", False),
        ("\\x{212a}", "\u212a", True),
    ],
)
def test_go_regexp_matches_as_go(pattern: str, text: str, found: bool) -> None:
    assert GoRegexp(pattern).search(text) is found


@pytest.mark.parametrize(
    "pattern",
    [
        "a**",
        "a{2}{3}",
        "*a",
        "(?i)*",
        "a)",
        "(a",
        "[a",
        "[z-a]",
        "a{1001}",
        "(a{100}){100}",
        "\\1",
        "\\8",
        "\\C",
        "\\Z",
        "[\\b]",
        "(?i-)",
        "(?P>x)",
        "(?P<>a)",
        "[[:foo:]]",
        "a\\",
        "\\x{110000}",
        "\\xZ1",
        "\\é",
    ],
)
def test_go_regexp_refuses_what_go_refuses(pattern: str) -> None:
    with pytest.raises(GoSyntaxError):
        GoRegexp(pattern)


def test_unicode_scripts_are_not_evaluated_here() -> None:
    with pytest.raises(Unsupported):
        GoRegexp("\\p{Greek}")


def test_equal_fold() -> None:
    assert equal_fold("Kelvin", "\u212aELVIN")
    assert not equal_fold("straße", "STRASSE")  # simple folding: lengths stay


# --------------------------------------------------------------------------------------------
# Properties.

_ATOMS = st.sampled_from(["a", "b", "A", ".", "[ab]", "[^a]", "\\w", "()", "x"])


def _patterns() -> st.SearchStrategy[str]:
    return st.recursive(
        _ATOMS,
        lambda inner: st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map("|".join),
            inner.map(lambda p: f"({p})"),
            st.tuples(inner, st.sampled_from(["*", "+", "?", "{2}", "{0,2}", "{1,}", "*?"])).map(
                lambda pair: f"(?:{pair[0]}){pair[1]}"
            ),
        ),
        max_leaves=8,
    )


@FUZZ
@given(_patterns(), st.text(alphabet="abAB\nx", max_size=8))
def test_go_regexp_agrees_with_python_re_where_their_syntax_agrees(pattern: str, text: str) -> None:
    expected = re.fullmatch(pattern, text, re.IGNORECASE) is not None
    assert GoRegexp(f"(?i)^(?:{pattern})$").search(text) is expected
    assert GoRegexp(pattern).search(text) is (re.search(pattern, text) is not None)


@FUZZ
@given(st.text(max_size=200))
def test_any_filter_compiles_or_is_refused(filter: str) -> None:
    _compiles_or_is_refused(filter)


def _compiles_or_is_refused(filter: str) -> None:
    try:
        matches = compile_filter(filter)
    except InvalidInputError:
        return
    for image in IMAGES:
        assert matches(image) in (True, False)


@FUZZ
@given(
    st.lists(
        st.sampled_from(
            [
                "not",
                "and",
                "or",
                "eq",
                "ne",
                '"',
                'a"',
                '"b',
                "properties.os",
                "type",
                "size",
                "public",
                "true",
                "1",
                "deb.*",
                "^a",
                "(",
                "[a-z]+",
                "x y",
            ]
        ),
        max_size=12,
    )
)
def test_filters_of_the_language_s_words_compile_or_are_refused(words: list[str]) -> None:
    _compiles_or_is_refused(" ".join(words))


@pytest.mark.parametrize(
    ("filter", "selected"),
    [
        ("properties.os\u0085eq\u00a0debian", ["Debian"]),  # Go's white space: NEL, NBSP
        ("properties.os\u3000eq\tdebian", ["Debian"]),
        ("properties.os eq debian\x1c", []),  # U+001C is not white space to Go
        ("properties.os eq alpine\x1f or type eq container", ["Debian"]),
    ],
)
def test_words_are_split_where_go_splits_them(filter: str, selected: list[str]) -> None:
    assert names(filter) == selected


_SOME_CLAUSES = ["properties.os eq debian", "type eq virtual-machine", "public eq true"]
_SOME_CLAUSES += ["size ne 99", "architecture eq x86.*", "properties.os eq ^a", "profiles eq []"]
_CLAUSES = st.sampled_from(_SOME_CLAUSES)


@FUZZ
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["and", "or"]), _CLAUSES), min_size=1))
def test_clauses_fold_left_to_right_without_precedence(
    clauses: list[tuple[bool, str, str]],
) -> None:
    words = []
    for index, (negate, conjunction, clause) in enumerate(clauses):
        if index:
            words.append(conjunction)
        words.append(f"not {clause}" if negate else clause)
    matches = compile_filter(" ".join(words))
    for image in IMAGES:
        expected = True
        for index, (negate, conjunction, clause) in enumerate(clauses):
            result = compile_filter(clause)(image) != negate
            joined = "and" if index == 0 else conjunction
            expected = (expected and result) if joined == "and" else (expected or result)
        assert matches(image) is expected


def test_the_automaton_s_memory_is_bounded() -> None:
    from incus_images import _goregexp

    pattern = GoRegexp("(?i)[^x]{490}x" * 4)
    rng = random.Random(1)
    for _ in range(40):
        assert not pattern.search("".join(rng.choice("abcdefgh") for _ in range(300)))
    for memo in (pattern._closures, pattern._steps):
        assert memo.held <= 250_000  # states: some 10 MB
        assert len(memo.entries) <= _goregexp._MAX_CACHED
