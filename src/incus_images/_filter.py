"""incusd's filter language (``GET /1.0/images?filter=``), evaluated here on :class:`Image`
models, so that one filter string selects the same images on a server and in a catalogue.

The language, as incusd 6.0 parses and evaluates it (internal/filter in lxc/incus):

- A filter is clauses joined by ``and`` / ``or``, words separated by white space:
  ``[not] FIELD OPERATOR VALUE [and|or [not] FIELD OPERATOR VALUE ...]``. ``and`` and ``or``
  are lower case only; ``not`` is any case. There is no precedence and no parentheses: the
  clauses are folded left to right, starting from true (``a or b and c`` is ``(a or b) and c``).
- A value that holds white space is quoted: ``properties.description eq "Debian 12"``. The
  opening ``"`` starts a run of words that ends at the next word ending in ``"`` (runs of white
  space inside become one space). A quote opened and closed in the same word is not: that
  closing ``"`` is ignored and the run goes on, so ``properties.os eq "debian"`` is refused as an
  unterminated quote.
- FIELD is a JSON name of the image (case-sensitive): ``architecture``, ``type``, ``filename``,
  ``fingerprint``, ``project`` (text); ``size`` (a number); ``public``, ``auto_update``,
  ``cached`` (booleans); ``profiles`` (a list); ``properties.KEY`` (text, empty when the image
  has no such property; KEY is everything after the first dot, dots included, matched
  exactly). ``aliases``, ``update_source``, ``properties`` alone and the dates cannot be
  filtered on: incusd answers with an error, and crashes the request (no answer at all) on a
  dotted name under a field that is not a map or a date (``aliases.name``,
  ``update_source.alias``, ``type.x``) and on ``created_at.`` (an empty name under a date).
  A quirk of incusd's lookup: ``.public`` reads ``public`` (the same for the other fields of
  the embedded ImagePut: ``auto_update``, ``properties``, ``expires_at``, ``profiles``).
- OPERATOR is ``eq`` or ``ne`` (lower case). incusd knows no other, for numbers neither.
- Text: VALUE is a case-insensitive Go regular expression. Unless it holds a ``^`` or a ``$``
  anywhere (even escaped or inside brackets), it is anchored at both ends (matched whole);
  with one, it matches anywhere the anchors allow (``fingerprint eq ^ab12`` is a prefix).
  Go's syntax, not Python's: ``$`` is the end of the text only, ``.`` is not a newline,
  ``\\d``, ``\\w``, ``\\s`` and ``\\b`` are ASCII, no backreferences or lookarounds. A VALUE Go
  cannot compile is compared as text, ignoring case (``properties.os eq a(b``).
- Numbers: a decimal integer (Go's strconv.ParseInt: optional sign, no spaces or ``_``).
- Booleans: ``1 t T TRUE true True`` and ``0 f F FALSE false False``.
- Lists: a JSON array of strings (written without spaces), equal when equal element by element
  (case-sensitive, in order).

Later incusd versions (not 6.0) also take ``eq a,b`` as either value and match a property key
by a prefix of its first part; a filter that relies on those selects differently on 6.0.

A malformed filter is :class:`InvalidInputError` naming what incusd answers about it. incusd
reports a clause it cannot evaluate only when it has an image to test (an empty list filters
without error); here the filter is refused whatever the images.

Bounds: a filter is at most :data:`MAX_FILTER_LENGTH` characters. Regular expressions are
matched without backtracking (see ``_goregexp``): the time to filter is linear in the number of
images and in the length of their values, for any filter. A pattern compiles to at most
``_goregexp.MAX_INSTRUCTIONS`` (2,000) states, so the worst pattern costs about that many
steps per character of a value (some 10 ms for a 300-character value); a real filter's patterns
have tens of states, and each distinct value is matched once per clause.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable

import attrs

from ._errors import InvalidInputError
from ._goregexp import GoRegexp, GoSyntaxError, Unsupported, equal_fold
from ._models import Image
from ._validate import text

__all__ = ["MAX_FILTER_LENGTH", "ImageFilter", "compile_filter", "select"]

#: The longest filter accepted, in characters. A real filter is a few dozen. The bound caps the
#: number of clauses, each of which costs time for every image, and the work of compiling its
#: regular expressions; it is far below what incusd takes in a URL (1 MiB of request head).
MAX_FILTER_LENGTH = 4096

#: Go's unicode.IsSpace, which strings.Fields splits on (Python's str.split also splits on
#: U+001C to U+001F, which Go keeps inside words).
_GO_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")

#: Distinct values whose match a text clause remembers (bounds its memory).
_MAX_REMEMBERED = 1024

_INT = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

#: The image's fields by JSON name, and how incusd sees each one's Go type.
_TEXT = ("architecture", "filename", "fingerprint", "type", "project")
_BOOLEANS = ("public", "auto_update", "cached")
#: Fields incusd cannot compare, with the kind its error names.
_UNCOMPARABLE = {
    "properties": 'Invalid type "map"',
    "expires_at": 'Invalid type "struct"',
    "created_at": 'Invalid type "struct"',
    "last_used_at": 'Invalid type "struct"',
    "uploaded_at": 'Invalid type "struct"',
    "update_source": 'Invalid type "ptr"',
    "aliases": 'Invalid slice type "struct"',
}
#: Fields of the Go struct api.ImagePut, which api.Image embeds (reachable as ``.FIELD`` too).
_EMBEDDED = ("auto_update", "properties", "public", "expires_at", "profiles")
_DATES = ("expires_at", "created_at", "last_used_at", "uploaded_at")

Getter = Callable[[Image], object]


@attrs.frozen
class _Clause:
    """One clause, ready to evaluate: ``test(image)`` before ``not`` is applied."""

    negate: bool
    conjunction: str  # "and" or "or": how it joins what comes before it
    test: Callable[[Image], bool]


@attrs.frozen
class ImageFilter:
    """A parsed filter, reusable: ``ImageFilter(image) -> bool``. Made by :func:`compile_filter`."""

    text: str
    _clauses: tuple[_Clause, ...]

    def __call__(self, image: Image) -> bool:
        """Whether the image is selected: the clauses folded left to right, from true."""
        selected = True
        for clause in self._clauses:
            result = clause.test(image) != clause.negate
            selected = (
                (selected and result) if clause.conjunction == "and" else (selected or result)
            )
        return selected


def select(images: Iterable[Image], filter: str) -> list[Image]:
    """The images the filter selects, in their order, as incusd would select them.

    Raises InvalidInputError for a filter incusd refuses (see the module for the language).
    """
    matches = compile_filter(filter)
    return [image for image in images if matches(image)]


def compile_filter(filter: str) -> ImageFilter:
    """Parse and check a filter once; the result tests an image. InvalidInputError if malformed."""
    text(filter, "filter", empty=False)  # refused as Client.images.list(filter=) refuses it
    if len(filter) > MAX_FILTER_LENGTH:
        raise InvalidInputError(
            f"filter is {len(filter)} characters long: at most {MAX_FILTER_LENGTH} are accepted"
        )
    words = [word for word in _GO_SPACE.split(filter) if word]
    clauses = []
    for number, (negate, conjunction, field, operator, value) in enumerate(
        _parse(filter, words), 1
    ):
        try:
            test = _clause_test(field, operator, value)
        except _Refused as refused:
            raise InvalidInputError(
                f"filter {filter!r}: clause {number} ({field} {operator} {value}): {refused}"
            ) from None
        clauses.append(_Clause(negate, conjunction, test))
    return ImageFilter(filter, tuple(clauses))


class _Refused(Exception):
    """Why incusd would not evaluate a clause."""


class _Crashes(_Refused):
    """incusd 6.0 panics in the request handler on the clause: the connection closes with no
    answer."""

    def __init__(self) -> None:
        super().__init__("incusd crashes the request on it (no answer)")


def refuse_what_crashes_incusd(filter: str) -> None:
    """InvalidInputError for a filter with a clause incusd 6.0 crashes the request on (a
    dotted name under a field that is not a map: ``update_source.alias``, ``aliases.name``,
    ``type.x``, ``created_at.``), before it is sent. Any other fault is left to the server,
    which answers it in its own words."""
    words = [word for word in _GO_SPACE.split(filter) if word]
    try:
        clauses = _parse(filter, words)
    except InvalidInputError:
        return  # incusd refuses it before evaluating any clause
    for number, (_, _, field, operator, value) in enumerate(clauses, 1):
        try:
            _getter(field)
        except _Crashes as crashes:
            raise InvalidInputError(
                f"filter {filter!r}: clause {number} ({field} {operator} {value}): {crashes}"
            ) from None
        except _Refused:
            continue


def _parse(filter: str, words: list[str]) -> list[tuple[bool, str, str, str, str]]:
    """The clauses (not, conjunction, field, operator, value), split as incusd splits them."""

    def refuse(why: str) -> InvalidInputError:
        return InvalidInputError(f"filter {filter!r}: incusd refuses it: Invalid filter: {why}")

    clauses = []
    index = 0
    conjunction = "and"
    while index < len(words):
        negate = equal_fold(words[index], "not")
        if negate:
            index += 1
            if index == len(words):
                raise refuse("incomplete not clause")
        field = words[index]
        index += 1
        if index == len(words):
            raise refuse("clause has no operator")
        operator = words[index]
        index += 1
        if index == len(words):
            raise refuse("clause has no value")
        value = words[index]
        if value.startswith('"'):
            # The closing quote is looked for from the next word on (see the module).
            pieces = [value[1:]]
            while True:
                index += 1
                if index == len(words):
                    raise refuse("unterminated quote")
                if words[index].endswith('"'):
                    break
                pieces.append(words[index])
            pieces.append(words[index][:-1])
            value = " ".join(pieces)
        index += 1
        clauses.append((negate, conjunction, field, operator, value))
        if index < len(words):
            conjunction = words[index]
            if conjunction not in ("and", "or"):
                raise refuse("invalid clause composition")
            index += 1
            if index == len(words):
                raise refuse("unterminated compound clause")
    return clauses


def _getter(field: str) -> tuple[str, Getter]:
    """The kind ("text", "int", "bool", "list") and reader of a field, as incusd's lookup finds
    it on the Go struct api.Image by its yaml names. _Refused where incusd fails."""
    key, dot, rest = field.partition(".")
    if key == "" and dot:
        # api.Image embeds api.ImagePut under an empty name: ".public" is public there.
        inner, _, _ = rest.partition(".")
        if inner not in _EMBEDDED:
            raise _Refused(f'incusd answers: Invalid type "invalid" for field "{field}"')
        return _getter(rest)
    if key == "properties" and dot:
        return "text", lambda image: image.properties.get(rest, "")
    if key in _DATES and dot:
        if rest.partition(".")[0] == "":
            raise _Crashes()
        raise _Refused(f'incusd answers: Invalid type "invalid" for field "{field}"')
    if dot and (key in _TEXT or key in _BOOLEANS or key in ("size", "profiles", "aliases")):
        raise _Crashes()
    if dot and key == "update_source":
        raise _Crashes()
    if key in _UNCOMPARABLE:
        raise _Refused(f'incusd answers: {_UNCOMPARABLE[key]} for field "{field}"')
    if key in _TEXT:
        return "text", lambda image: getattr(image, key)
    if key in _BOOLEANS:
        return "bool", lambda image: getattr(image, key)
    if key == "size":
        return "int", lambda image: image.size
    if key == "profiles":
        return "list", lambda image: image.profiles
    raise _Refused(f'incusd answers: Invalid type "invalid" for field "{field}"')


def _clause_test(field: str, operator: str, value: str) -> Callable[[Image], bool]:
    """The test of one clause before ``not``, in incusd's order of checks: the field, the
    value against the field's type, then the operator."""
    kind, read = _getter(field)
    if kind == "text":
        equal = _text_test(read, value)
    else:
        expected: object
        if kind == "int":
            if not _INT.fullmatch(value) or not -(2**63) <= int(value) < 2**63:
                raise _Refused(f"incusd answers: Failed to parse value: {value!r} is not an int64")
            expected = int(value)
        elif kind == "bool":
            if value not in _TRUE and value not in _FALSE:
                raise _Refused(f"incusd answers: Failed to parse value: {value!r} is not a bool")
            expected = value in _TRUE
        else:
            expected = _string_list(value)

        def equal(image: Image) -> bool:
            return read(image) == expected

    if operator == "eq":
        return equal
    if operator == "ne":

        def unequal(image: Image) -> bool:
            return not equal(image)

        return unequal
    raise _Refused(f"incusd answers: Unsupported operation {operator!r} (only eq and ne)")


def _text_test(read: Getter, value: str) -> Callable[[Image], bool]:
    """A text field's ``eq``: a case-insensitive Go regular expression, anchored at both ends
    unless it holds ``^`` or ``$``; text compared ignoring case if Go cannot compile it."""
    anchored = value if ("^" in value or "$" in value) else f"^{value}$"
    try:
        pattern = GoRegexp("(?i)" + anchored)
    except GoSyntaxError:

        def same_text(image: Image) -> bool:
            return equal_fold(str(read(image)), value)

        return same_text
    except Unsupported as exc:
        raise _Refused(f"this regular expression cannot be evaluated here: {exc}") from None

    # Many images share a value (a type, an os): each distinct one is matched once.
    seen: dict[str, bool] = {}

    def matches(image: Image) -> bool:
        value = str(read(image))
        found = seen.get(value)
        if found is None:
            if len(seen) >= _MAX_REMEMBERED:
                seen.clear()
            found = seen[value] = pattern.search(value)
        return found

    return matches


def _string_list(value: str) -> list[str]:
    """A JSON array of strings as Go's json.Unmarshal reads it into []string."""

    def refuse(_: str) -> object:
        raise ValueError("not JSON")

    try:
        parsed = json.loads(value, parse_constant=refuse)
    except ValueError:
        raise _Refused(f"incusd answers: Failed to parse value: {value!r} is not JSON") from None
    if parsed is None:
        return []
    if not isinstance(parsed, list) or not all(
        item is None or isinstance(item, str) for item in parsed
    ):
        raise _Refused(f"incusd answers: Failed to parse value: {value!r} is not a list of text")
    # Go leaves a string as it was (empty) for a JSON null.
    return ["" if item is None else item for item in parsed]
