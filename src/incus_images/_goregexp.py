"""Go's regular expressions (package regexp, RE2 syntax), as incusd compiles a filter's value.

Only what a filter needs: whether Go accepts a pattern (incusd falls back to a plain
comparison when it does not), and whether a pattern matches somewhere in a string (Go's
``MatchString``). Patterns are parsed with Go's rules (Perl flags, as ``regexp.Compile``) and
matched by simulating the automaton (a Thompson NFA whose state sets are cached, as RE2 does):
time is linear in the string for a given pattern and nothing backtracks, so no pattern, however
written, can take exponential time as Python's ``re`` can.

Bounds of this implementation, each refused with :class:`Unsupported` (incusd would evaluate
them): Unicode script classes (``\\p{Greek}``; general categories such as ``\\pL`` work), more
than :data:`MAX_INSTRUCTIONS` instructions after repetitions are expanded, groups nested deeper
than :data:`MAX_NESTING`. Case folding (``(?i)``) is Unicode simple folding as Go has it, from
Python's tables (Unicode versions may differ by a few recent characters).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["GoRegexp", "GoSyntaxError", "Unsupported", "equal_fold", "fold_orbit"]

#: The most instructions a compiled pattern may have here (Go allows some 3 million): the
#: states active at once, and so the time per character matched, grow with it. Real patterns
#: have tens; 2,000 allows ``.{1000}``-sized counts and bounds the worst to ~10 ms per
#: 300-character value.
MAX_INSTRUCTIONS = 2_000
#: The deepest nesting of groups parsed here (Go allows 1,000): the parser recurses.
MAX_NESTING = 100
#: Go's largest repetition count, and largest product of nested counts.
_MAX_REPEAT = 1000
#: State sets (and class answers) remembered per pattern before it starts anew.
_MAX_CACHED = 4096
#: States held in the remembered sets of one memo at most (some 10 MB): a 2,000-state pattern
#: could otherwise hold 4,096 sets of 2,000.
_MAX_HELD = 250_000


class GoSyntaxError(Exception):
    """Go's regexp.Compile refuses the pattern."""


class Unsupported(Exception):
    """Go accepts the pattern but this implementation cannot evaluate it (see the module)."""


# --------------------------------------------------------------------------------------------
# Case folding: Go's orbits (unicode.SimpleFold) where Python's lower()/upper() do not reach
# every member, or reach one Go leaves out (dotless i).

_FOLD_EXTRA: dict[str, str] = {
    "K": "Kk\u212a",
    "S": "Ss\u017f",
    "k": "Kk\u212a",
    "s": "Ss\u017f",
    "\xc5": "\xc5\xe5\u212b",
    "\xdf": "\xdf\u1e9e",
    "\xe5": "\xc5\xe5\u212b",
    "\u0131": "\u0131",
    "\u01c4": "\u01c4\u01c5\u01c6",
    "\u01c6": "\u01c4\u01c5\u01c6",
    "\u01c7": "\u01c7\u01c8\u01c9",
    "\u01c9": "\u01c7\u01c8\u01c9",
    "\u01ca": "\u01ca\u01cb\u01cc",
    "\u01cc": "\u01ca\u01cb\u01cc",
    "\u01f1": "\u01f1\u01f2\u01f3",
    "\u01f3": "\u01f1\u01f2\u01f3",
    "\u0345": "\u0345\u0399\u03b9\u1fbe",
    "\u0392": "\u0392\u03b2\u03d0",
    "\u0395": "\u0395\u03b5\u03f5",
    "\u0398": "\u0398\u03b8\u03d1\u03f4",
    "\u0399": "\u0345\u0399\u03b9\u1fbe",
    "\u039a": "\u039a\u03ba\u03f0",
    "\u039c": "\xb5\u039c\u03bc",
    "\u03a0": "\u03a0\u03c0\u03d6",
    "\u03a1": "\u03a1\u03c1\u03f1",
    "\u03a3": "\u03a3\u03c2\u03c3",
    "\u03a6": "\u03a6\u03c6\u03d5",
    "\u03a9": "\u03a9\u03c9\u2126",
    "\u03b2": "\u0392\u03b2\u03d0",
    "\u03b5": "\u0395\u03b5\u03f5",
    "\u03b8": "\u0398\u03b8\u03d1\u03f4",
    "\u03b9": "\u0345\u0399\u03b9\u1fbe",
    "\u03ba": "\u039a\u03ba\u03f0",
    "\u03bc": "\xb5\u039c\u03bc",
    "\u03c0": "\u03a0\u03c0\u03d6",
    "\u03c1": "\u03a1\u03c1\u03f1",
    "\u03c3": "\u03a3\u03c2\u03c3",
    "\u03c6": "\u03a6\u03c6\u03d5",
    "\u03c9": "\u03a9\u03c9\u2126",
    "\u03d1": "\u0398\u03b8\u03d1\u03f4",
    "\u03f4": "\u0398\u03b8\u03d1\u03f4",
    "\u0412": "\u0412\u0432\u1c80",
    "\u0414": "\u0414\u0434\u1c81",
    "\u041e": "\u041e\u043e\u1c82",
    "\u0421": "\u0421\u0441\u1c83",
    "\u0422": "\u0422\u0442\u1c84\u1c85",
    "\u042a": "\u042a\u044a\u1c86",
    "\u0432": "\u0412\u0432\u1c80",
    "\u0434": "\u0414\u0434\u1c81",
    "\u043e": "\u041e\u043e\u1c82",
    "\u0441": "\u0421\u0441\u1c83",
    "\u0442": "\u0422\u0442\u1c84\u1c85",
    "\u044a": "\u042a\u044a\u1c86",
    "\u0462": "\u0462\u0463\u1c87",
    "\u0463": "\u0462\u0463\u1c87",
    "\u1c84": "\u0422\u0442\u1c84\u1c85",
    "\u1c85": "\u0422\u0442\u1c84\u1c85",
    "\u1e60": "\u1e60\u1e61\u1e9b",
    "\u1e61": "\u1e60\u1e61\u1e9b",
    "\u1f80": "\u1f80\u1f88",
    "\u1f81": "\u1f81\u1f89",
    "\u1f82": "\u1f82\u1f8a",
    "\u1f83": "\u1f83\u1f8b",
    "\u1f84": "\u1f84\u1f8c",
    "\u1f85": "\u1f85\u1f8d",
    "\u1f86": "\u1f86\u1f8e",
    "\u1f87": "\u1f87\u1f8f",
    "\u1f90": "\u1f90\u1f98",
    "\u1f91": "\u1f91\u1f99",
    "\u1f92": "\u1f92\u1f9a",
    "\u1f93": "\u1f93\u1f9b",
    "\u1f94": "\u1f94\u1f9c",
    "\u1f95": "\u1f95\u1f9d",
    "\u1f96": "\u1f96\u1f9e",
    "\u1f97": "\u1f97\u1f9f",
    "\u1fa0": "\u1fa0\u1fa8",
    "\u1fa1": "\u1fa1\u1fa9",
    "\u1fa2": "\u1fa2\u1faa",
    "\u1fa3": "\u1fa3\u1fab",
    "\u1fa4": "\u1fa4\u1fac",
    "\u1fa5": "\u1fa5\u1fad",
    "\u1fa6": "\u1fa6\u1fae",
    "\u1fa7": "\u1fa7\u1faf",
    "\u1fb3": "\u1fb3\u1fbc",
    "\u1fbe": "\u0345\u0399\u03b9\u1fbe",
    "\u1fc3": "\u1fc3\u1fcc",
    "\u1ff3": "\u1ff3\u1ffc",
    "\ua64a": "\u1c88\ua64a\ua64b",
    "\ua64b": "\u1c88\ua64a\ua64b",
}


@functools.lru_cache(maxsize=4096)
def fold_orbit(char: str) -> frozenset[str]:
    """The characters equal to ``char`` under Go's simple case folding (``char`` included)."""
    extra = _FOLD_EXTRA.get(char)
    if extra is not None:
        return frozenset(extra)
    seen = {char}
    todo = [char]
    while todo:
        current = todo.pop()
        for other in (current.lower(), current.upper()):
            if len(other) == 1 and other not in seen and other != "\u0131":
                seen.add(other)
                todo.append(other)
    return frozenset(seen)


def equal_fold(left: str, right: str) -> bool:
    """Go's strings.EqualFold: equal under simple case folding, character by character."""
    if len(left) != len(right):
        return False
    return all(a == b or b in fold_orbit(a) for a, b in zip(left, right, strict=True))


# --------------------------------------------------------------------------------------------
# Character classes.

Ranges = tuple[tuple[int, int], ...]

_DIGIT: Ranges = ((0x30, 0x39),)
_SPACE: Ranges = ((0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20))
_WORD: Ranges = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_PERL: dict[str, Ranges] = {"d": _DIGIT, "s": _SPACE, "w": _WORD}
_POSIX: dict[str, Ranges] = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": _DIGIT,
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": _WORD,
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}
#: Go's general categories (package unicode); ``C`` there leaves out unassigned code points.
_CATEGORIES = (
    frozenset(("C", "L", "M", "N", "P", "S", "Z"))
    | frozenset(
        ("Cc", "Cf", "Co", "Cs", "Ll", "Lm", "Lo", "Lt", "Lu", "Mc", "Me", "Mn", "Nd", "Nl", "No")
    )
    | frozenset(
        ("Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "Sc", "Sk", "Sm", "So", "Zl", "Zp", "Zs")
    )
)


class _Item:
    """One member of a class: code point ranges or a Unicode category, possibly negated.

    Under ``(?i)`` Go closes the positive set under case folding, then negates it: so does
    :meth:`holds`, given every member of a character's fold orbit.
    """

    __slots__ = ("category", "negated", "ranges")

    def __init__(self, ranges: Ranges = (), *, category: str = "", negated: bool = False):
        self.ranges = ranges
        self.category = category
        self.negated = negated

    def _positive(self, char: str) -> bool:
        if self.category == "Any":
            return True
        if self.category:
            found = unicodedata.category(char)
            if len(self.category) == 1:
                return found[0] == self.category and found != "Cn"
            return found == self.category
        code = ord(char)
        return any(low <= code <= high for low, high in self.ranges)

    def holds(self, candidates: frozenset[str] | tuple[str]) -> bool:
        return any(self._positive(c) for c in candidates) != self.negated


class _Class:
    """A character class as Go builds it: a union of items, possibly negated as a whole."""

    __slots__ = ("fold", "items", "known", "negated")

    def __init__(self, items: list[_Item], *, negated: bool, fold: bool) -> None:
        self.items = items
        self.negated = negated
        self.fold = fold
        #: Answers already worked out, by character (bounded).
        self.known: dict[str, bool] = {}

    def __call__(self, char: str) -> bool:
        found = self.known.get(char)
        if found is None:
            candidates = fold_orbit(char) if self.fold else (char,)
            found = any(item.holds(candidates) for item in self.items) != self.negated
            if len(self.known) >= _MAX_CACHED:
                self.known.clear()
            self.known[char] = found
        return found


# --------------------------------------------------------------------------------------------
# Syntax tree: tuples, tagged by their first member.
#   ("char", predicate) ("assert", kind) ("cat", [nodes]) ("alt", [nodes])
#   ("repeat", node, min, max)  max -1: unbounded

Node = tuple[object, ...]
_EMPTY: Node = ("cat", [])

_FOLD, _MULTILINE, _DOTNL = 1, 2, 4
_FLAG_BITS = {"i": _FOLD, "m": _MULTILINE, "s": _DOTNL, "U": 0}


def _is_word_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0
        self.flags = 0
        self.depth = 0

    def fail(self, why: str) -> GoSyntaxError:
        return GoSyntaxError(f"{why} at offset {self.pos} of {self.text!r}")

    def peek(self, ahead: int = 0) -> str:
        index = self.pos + ahead
        return self.text[index] if index < len(self.text) else ""

    def parse(self) -> Node:
        node = self.alternation()
        if self.pos < len(self.text):  # only a ')' stops an alternation early
            raise self.fail("unexpected )")
        return node

    def alternation(self) -> Node:
        branches = [self.concatenation()]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.concatenation())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concatenation(self) -> Node:
        items: list[Node] = []
        # What the last item came from: a repetition cannot follow a repetition directly.
        last_repeat = False
        while True:
            char = self.peek()
            if char in ("", "|", ")"):
                break
            repeat = self.repetition()
            if repeat is not None:
                low, high, braces = repeat
                if last_repeat:
                    raise self.fail("invalid nested repetition operator")
                if not items:
                    raise self.fail("missing argument to repetition operator")
                if self.peek() == "?":
                    self.pos += 1  # non-greedy: the same matches, found in another order
                if (
                    braces
                    and (low >= 2 or high >= 2)
                    and not _repeat_valid(("repeat", items[-1], low, high), _MAX_REPEAT)
                ):
                    raise self.fail("invalid repeat count")
                items[-1] = ("repeat", items[-1], low, high)
                last_repeat = True
                continue
            last_repeat = False
            items.extend(self.atom())
        return items[0] if len(items) == 1 else ("cat", items)

    def repetition(self) -> tuple[int, int, bool] | None:
        """The next repetition operator: (min, max or -1, whether written with braces)."""
        char = self.peek()
        if char in ("*", "+", "?"):
            self.pos += 1
            counts = {"*": (0, -1), "+": (1, -1), "?": (0, 1)}[char]
            return counts[0], counts[1], False
        if char != "{":
            return None
        end = self.text.find("}", self.pos)
        if end < 0:
            return None
        body = self.text[self.pos + 1 : end]
        low_text, comma, high_text = body.partition(",")
        low = _repeat_number(low_text)
        high: int | None = low
        if comma:
            high = -1 if high_text == "" else _repeat_number(high_text)
            if high == -1 and high_text != "":
                low = -1  # Go: too big a maximum makes the count invalid
        if low is None or high is None:
            return None  # not a repetition: '{' is a literal
        if low < 0 or low > _MAX_REPEAT or high > _MAX_REPEAT or (high >= 0 and low > high):
            raise self.fail("invalid repeat count")
        self.pos = end + 1
        return low, high, True

    def atom(self) -> list[Node]:
        """The next item(s): none for a flags group, several for ``\\Q...\\E``."""
        char = self.peek()
        if char == "(":
            return self.group()
        self.pos += 1
        if char == ".":
            dotnl = bool(self.flags & _DOTNL)
            return [("char", (lambda c: True) if dotnl else (lambda c: c != "\n"))]
        if char == "^":
            return [("assert", "bol" if self.flags & _MULTILINE else "bot")]
        if char == "$":
            return [("assert", "eol" if self.flags & _MULTILINE else "eot")]
        if char == "[":
            return [("char", self.bracket())]
        if char == "\\":
            return self.escape_outside()
        return [self.literal(char)]

    def literal(self, char: str) -> Node:
        if self.flags & _FOLD:
            orbit = fold_orbit(char)
            if len(orbit) > 1:
                return ("char", orbit.__contains__)
        return ("char", char.__eq__)

    def group(self) -> list[Node]:
        self.pos += 1  # '('
        saved = self.flags
        if self.peek() == "?" and self.group_name() is None and not self.flags_group():
            return []  # (?flags): they hold until the enclosing group closes
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise Unsupported(f"groups nested more than {MAX_NESTING} deep")
        node = self.alternation()
        if self.peek() != ")":
            raise self.fail("missing closing )")
        self.pos += 1
        self.depth -= 1
        self.flags = saved
        return [("cat", [node])]

    def group_name(self) -> str | None:
        rest = self.text[self.pos :]
        if rest.startswith("?P<"):
            start = self.pos + 3
        elif rest.startswith("?<") and not rest.startswith(("?<=", "?<!")):
            start = self.pos + 2
        elif rest.startswith("?P"):
            raise self.fail("invalid or unsupported Perl syntax")
        else:
            return None
        end = self.text.find(">", start)
        if end < 0:
            raise self.fail("invalid named capture")
        name = self.text[start:end]
        if not name or not all(_is_word_char(c) for c in name):
            raise self.fail("invalid named capture")
        self.pos = end + 1
        return name

    def flags_group(self) -> bool:
        """Parse ``(?flags)`` or ``(?flags:``; True for the second (a group follows)."""
        self.pos += 1  # '?'
        flags = self.flags
        negate = False
        saw_flag = False
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char in _FLAG_BITS:
                bit = _FLAG_BITS[char]
                flags = flags & ~bit if negate else flags | bit
                saw_flag = True
            elif char == "-" and not negate:
                negate = True
                saw_flag = False
            elif char in (":", ")"):
                if negate and not saw_flag:
                    break
                self.flags = flags
                return char == ":"
            else:
                break
        raise self.fail("invalid or unsupported Perl syntax")

    def escape_outside(self) -> list[Node]:
        char = self.peek()
        if char == "":
            raise self.fail("trailing backslash at end of expression")
        simple = {"A": "bot", "z": "eot", "b": "wordb", "B": "nwordb"}
        if char in simple:
            self.pos += 1
            return [("assert", simple[char])]
        if char == "C":
            raise self.fail("invalid escape sequence")
        if char == "Q":
            end = self.text.find("\\E", self.pos + 1)
            literal = self.text[self.pos + 1 :] if end < 0 else self.text[self.pos + 1 : end]
            self.pos = len(self.text) if end < 0 else end + 2
            return [self.literal(c) for c in literal]
        if char in ("p", "P"):
            return [("char", _Class([self.unicode_class()], negated=False, fold=self._fold()))]
        if char in "dDsSwW":
            self.pos += 1
            item = _Item(_PERL[char.lower()], negated=char.isupper())
            return [("char", _Class([item], negated=False, fold=self._fold()))]
        return [self.literal(self.escape_char())]

    def _fold(self) -> bool:
        return bool(self.flags & _FOLD)

    def escape_char(self) -> str:
        """The character an escape stands for (the backslash consumed; at its letter)."""
        char = self.peek()
        if char == "":
            raise self.fail("trailing backslash at end of expression")
        self.pos += 1
        if char.isascii() and not char.isalnum():
            return char
        if "1" <= char <= "7" and not ("0" <= self.peek() <= "7" and self.peek() != ""):
            raise self.fail("invalid escape sequence")  # a backreference
        if "0" <= char <= "7":
            value = int(char)
            for _ in range(2):
                digit = self.peek()
                if digit == "" or not "0" <= digit <= "7":
                    break
                value = value * 8 + int(digit)
                self.pos += 1
            return chr(value)
        if char == "x":
            return self.hex_escape()
        named = {"a": "\a", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
        if char in named:
            return named[char]
        raise self.fail("invalid escape sequence")

    def hex_escape(self) -> str:
        if self.peek() == "{":
            end = self.text.find("}", self.pos)
            digits = self.text[self.pos + 1 : end] if end > 0 else ""
            if end < 0 or not digits or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.fail("invalid escape sequence")
            value = int(digits, 16)
            if value > 0x10FFFF:
                raise self.fail("invalid escape sequence")
            self.pos = end + 1
        else:
            digits = self.text[self.pos : self.pos + 2]
            if len(digits) != 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.fail("invalid escape sequence")
            value = int(digits, 16)
            self.pos += 2
        return chr(value)

    def unicode_class(self) -> _Item:
        """``\\pL``, ``\\p{Lu}``, ``\\p{^L}``, ``\\PL`` (at the p)."""
        negated = self.peek() == "P"
        self.pos += 1
        char = self.peek()
        if char == "":
            raise self.fail("invalid character class range")
        if char == "{":
            end = self.text.find("}", self.pos)
            if end < 0:
                raise self.fail("invalid character class range")
            name = self.text[self.pos + 1 : end]
            self.pos = end + 1
        else:
            name = char
            self.pos += 1
        if name.startswith("^"):
            negated = not negated
            name = name[1:]
        if name == "Any" or name in _CATEGORIES:
            return _Item(category=name, negated=negated)
        raise Unsupported(f"Unicode class \\p{{{name}}} (only Any and general categories)")

    def bracket(self) -> _Class:
        """A bracketed class (at the character after ``[``)."""
        negated = False
        if self.peek() == "^":
            negated = True
            self.pos += 1
        items: list[_Item] = []
        first = True
        while first or self.peek() != "]":
            if self.peek() == "":
                raise self.fail("missing closing ]")
            first = False
            rest = self.text[self.pos :]
            if rest.startswith("[:"):
                end = rest.find(":]", 2)
                if end >= 0:
                    name = rest[2:end]
                    posix_negated = name.startswith("^")
                    ranges = _POSIX.get(name.lstrip("^") if posix_negated else name)
                    if ranges is None or name.count("^") > 1:
                        raise self.fail("invalid character class range")
                    items.append(_Item(ranges, negated=posix_negated))
                    self.pos += end + 2
                    continue
            if rest.startswith(("\\p", "\\P")):
                self.pos += 1
                items.append(self.unicode_class())
                continue
            if len(rest) >= 2 and rest[0] == "\\" and rest[1] in "dDsSwW":
                items.append(_Item(_PERL[rest[1].lower()], negated=rest[1].isupper()))
                self.pos += 2
                continue
            low = self.class_char()
            high = low
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                high = self.class_char()
                if ord(high) < ord(low):
                    raise self.fail("invalid character class range")
            items.append(_Item(((ord(low), ord(high)),)))
        self.pos += 1  # ']'
        return _Class(items, negated=negated, fold=self._fold())

    def class_char(self) -> str:
        char = self.peek()
        if char == "":
            raise self.fail("missing closing ]")
        self.pos += 1
        if char == "\\":
            return self.escape_char()
        return char


def _repeat_number(text: str) -> int | None:
    """A count of ``{n,m}`` as Go reads it: None if it is not one (then '{' is literal)."""
    if not text or not all("0" <= c <= "9" for c in text):
        return None
    if len(text) >= 2 and text[0] == "0":
        return None  # Go refuses leading zeros
    return -1 if len(text) > 8 else int(text)


def _repeat_valid(node: Node, budget: int) -> bool:
    """Go's check that nested counted repetitions multiply to at most 1,000."""
    if node[0] == "repeat":
        high = node[3]
        assert isinstance(high, int)
        count = node[2] if high < 0 else high
        assert isinstance(count, int)
        if high == 0:
            return True
        if count > budget:
            return False
        if count > 0:
            budget //= count
        return _repeat_valid(node[1], budget)  # type: ignore[arg-type]
    if node[0] in ("cat", "alt"):
        children = node[1]
        assert isinstance(children, list)
        return all(_repeat_valid(child, budget) for child in children)
    return True


# --------------------------------------------------------------------------------------------
# The automaton.

#: Where a match may be: (at the start, at the end, after a newline, before a newline, at a
#: word boundary).
_Context = tuple[bool, bool, bool, bool, bool]

_ASSERTIONS: dict[str, Callable[[_Context], bool]] = {
    "bot": lambda ctx: ctx[0],
    "eot": lambda ctx: ctx[1],
    "bol": lambda ctx: ctx[0] or ctx[2],
    "eol": lambda ctx: ctx[1] or ctx[3],
    "wordb": lambda ctx: ctx[4],
    "nwordb": lambda ctx: not ctx[4],
}


class GoRegexp:
    """A pattern Go's ``regexp.Compile`` accepts, matched as ``MatchString`` does (anywhere in
    the string). Raises GoSyntaxError where Go refuses the pattern, Unsupported where this
    implementation cannot evaluate it."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        tree = _Parser(pattern).parse()
        self._kinds: list[str] = []
        self._args: list[object] = []
        self._outs: list[list[int]] = []
        self._match = self._new("match", None, [])
        self._start = self._compile(tree, self._match)
        self._closures: _Memo[tuple[frozenset[int], _Context]] = _Memo()
        self._steps: _Memo[tuple[frozenset[int], str]] = _Memo()

    def _new(self, kind: str, arg: object, outs: list[int]) -> int:
        if len(self._kinds) >= MAX_INSTRUCTIONS:
            raise Unsupported(f"the pattern expands to more than {MAX_INSTRUCTIONS} states")
        self._kinds.append(kind)
        self._args.append(arg)
        self._outs.append(outs)
        return len(self._kinds) - 1

    def _compile(self, node: Node, after: int) -> int:
        """The state that matches ``node`` and then goes on to ``after``."""
        tag = node[0]
        if tag == "char":
            return self._new("char", node[1], [after])
        if tag == "assert":
            return self._new("assert", _ASSERTIONS[str(node[1])], [after])
        if tag == "cat":
            children = node[1]
            assert isinstance(children, list)
            for child in reversed(children):
                after = self._compile(child, after)
            return after
        if tag == "alt":
            branches = node[1]
            assert isinstance(branches, list)
            return self._new("split", None, [self._compile(b, after) for b in branches])
        sub, low, high = node[1], node[2], node[3]
        assert isinstance(sub, tuple)
        assert isinstance(low, int)
        assert isinstance(high, int)
        if high < 0:
            loop = self._new("split", None, [])
            self._outs[loop] = [self._compile(sub, loop), after]
            start = loop
        else:
            start = after
            for _ in range(high - low):  # x{0,k}: k optional copies, same language
                start = self._new("split", None, [self._compile(sub, start), start])
        for _ in range(low):
            start = self._compile(sub, start)
        return start

    def _closure(self, states: frozenset[int], ctx: _Context) -> frozenset[int]:
        """The states reached from ``states`` (and a new start) without reading a character."""
        return self._closures.get((states, ctx), lambda: self._follow(states, ctx))

    def _follow(self, states: frozenset[int], ctx: _Context) -> frozenset[int]:
        seen: set[int] = set()
        todo = [*states, self._start]  # a match may begin anywhere
        while todo:
            state = todo.pop()
            if state in seen:
                continue
            seen.add(state)
            kind = self._kinds[state]
            if kind == "split":
                todo.extend(self._outs[state])
            elif kind == "assert":
                check = self._args[state]
                assert callable(check)
                if check(ctx):
                    todo.append(self._outs[state][0])
        return frozenset(s for s in seen if self._kinds[s] in ("char", "match"))

    def _step(self, states: frozenset[int], char: str) -> frozenset[int]:
        """The states reached from ``states`` by reading ``char``."""
        return self._steps.get((states, char), lambda: self._read(states, char))

    def _read(self, states: frozenset[int], char: str) -> frozenset[int]:
        following = set()
        for state in states:
            if self._kinds[state] == "char":
                predicate = self._args[state]
                assert callable(predicate)
                if predicate(char):
                    following.add(self._outs[state][0])
        return frozenset(following)

    def search(self, text: str) -> bool:
        """Whether the pattern matches somewhere in ``text`` (Go's MatchString)."""
        current: frozenset[int] = frozenset()
        size = len(text)
        previous = ""
        for index in range(size + 1):
            following = text[index] if index < size else ""
            ctx = (
                index == 0,
                index == size,
                previous == "\n",
                following == "\n",
                _is_word_char(previous) != _is_word_char(following),
            )
            states = self._closure(current, ctx)
            if self._match in states:
                return True
            if index == size:
                break
            current = self._step(states, following)
            previous = following
        return False


K = TypeVar("K")


class _Memo(Generic[K]):
    """State sets already worked out, by key; emptied when it holds :data:`_MAX_HELD` states
    or :data:`_MAX_CACHED` sets, so that its memory stays bounded whatever the pattern."""

    __slots__ = ("entries", "held")

    def __init__(self) -> None:
        self.entries: dict[K, frozenset[int]] = {}
        self.held = 0

    def get(self, key: K, compute: Callable[[], frozenset[int]]) -> frozenset[int]:
        found = self.entries.get(key)
        if found is None:
            found = compute()
            if len(self.entries) >= _MAX_CACHED or self.held + len(found) > _MAX_HELD:
                self.entries.clear()
                self.held = 0
            self.entries[key] = found
            self.held += len(found) + 1
        return found
