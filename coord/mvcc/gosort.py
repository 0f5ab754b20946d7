"""Go 1.19's ``sort.Sort`` (pattern-defeating quicksort), ported to order sorted ranges
exactly as etcd 3.4.23 (built with go1.19.8) orders them.

etcd sorts a Range by VERSION / CREATE / MOD / VALUE with the unstable ``sort.Sort`` (and
``sort.Sort(sort.Reverse(..))`` for DESCEND), so the order among equal elements is whatever
pdqsort leaves, deterministically. Python's stable sort gives the same answer when there are
no ties or at most 12 elements (Go then uses insertion sort, which is stable); :func:`go_sort`
is only needed beyond that, and is exact.

Invariant: for every input, ``go_sort`` performs the same sequence of Less/Swap calls as
Go 1.19's ``sort.Sort`` on the same data, hence produces the same permutation.
"""

from __future__ import annotations

from typing import Any

_MASK64 = (1 << 64) - 1
_UNKNOWN, _INCREASING, _DECREASING = 0, 1, 2


class _Data:
    """A sort.Interface over parallel lists: ``keys`` drive Less, ``items`` follow Swaps."""

    __slots__ = ("items", "keys", "rev")

    def __init__(self, items: list[Any], keys: list[Any], reverse: bool) -> None:
        self.items = items
        self.keys = keys
        self.rev = reverse

    def less(self, i: int, j: int) -> bool:
        k = self.keys
        return bool(k[j] < k[i]) if self.rev else bool(k[i] < k[j])

    def swap(self, i: int, j: int) -> None:
        k = self.keys
        it = self.items
        k[i], k[j] = k[j], k[i]
        it[i], it[j] = it[j], it[i]


def go_sort(items: list[Any], keys: list[Any], reverse: bool = False) -> None:
    """Sort ``items`` in place by ``keys`` (parallel list, also permuted) like Go's
    ``sort.Sort`` (``reverse``: like ``sort.Sort(sort.Reverse(..))``)."""
    n = len(items)
    if n <= 1:
        return
    _pdqsort(_Data(items, keys, reverse), 0, n, n.bit_length())


def _insertion_sort(data: _Data, a: int, b: int) -> None:
    for i in range(a + 1, b):
        j = i
        while j > a and data.less(j, j - 1):
            data.swap(j, j - 1)
            j -= 1


def _sift_down(data: _Data, lo: int, hi: int, first: int) -> None:
    root = lo
    while True:
        child = 2 * root + 1
        if child >= hi:
            return
        if child + 1 < hi and data.less(first + child, first + child + 1):
            child += 1
        if not data.less(first + root, first + child):
            return
        data.swap(first + root, first + child)
        root = child


def _heap_sort(data: _Data, a: int, b: int) -> None:
    first = a
    lo = 0
    hi = b - a
    for i in range((hi - 1) // 2, -1, -1):
        _sift_down(data, i, hi, first)
    for i in range(hi - 1, -1, -1):
        data.swap(first, first + i)
        _sift_down(data, lo, i, first)


def _pdqsort(data: _Data, a: int, b: int, limit: int) -> None:
    max_insertion = 12
    was_balanced = True
    was_partitioned = True
    while True:
        length = b - a
        if length <= max_insertion:
            _insertion_sort(data, a, b)
            return
        if limit == 0:
            _heap_sort(data, a, b)
            return
        if not was_balanced:
            _break_patterns(data, a, b)
            limit -= 1
        pivot, hint = _choose_pivot(data, a, b)
        if hint == _DECREASING:
            _reverse_range(data, a, b)
            pivot = (b - 1) - (pivot - a)
            hint = _INCREASING
        if (
            was_balanced
            and was_partitioned
            and hint == _INCREASING
            and _partial_insertion_sort(data, a, b)
        ):
            return
        if a > 0 and not data.less(a - 1, pivot):
            a = _partition_equal(data, a, b, pivot)
            continue
        mid, already = _partition(data, a, b, pivot)
        was_partitioned = already
        left_len, right_len = mid - a, b - mid
        balance_threshold = length // 8
        if left_len < right_len:
            was_balanced = left_len >= balance_threshold
            _pdqsort(data, a, mid, limit)
            a = mid + 1
        else:
            was_balanced = right_len >= balance_threshold
            _pdqsort(data, mid + 1, b, limit)
            b = mid


def _partition(data: _Data, a: int, b: int, pivot: int) -> tuple[int, bool]:
    data.swap(a, pivot)
    i, j = a + 1, b - 1
    while i <= j and data.less(i, a):
        i += 1
    while i <= j and not data.less(j, a):
        j -= 1
    if i > j:
        data.swap(j, a)
        return j, True
    data.swap(i, j)
    i += 1
    j -= 1
    while True:
        while i <= j and data.less(i, a):
            i += 1
        while i <= j and not data.less(j, a):
            j -= 1
        if i > j:
            break
        data.swap(i, j)
        i += 1
        j -= 1
    data.swap(j, a)
    return j, False


def _partition_equal(data: _Data, a: int, b: int, pivot: int) -> int:
    data.swap(a, pivot)
    i, j = a + 1, b - 1
    while True:
        while i <= j and not data.less(a, i):
            i += 1
        while i <= j and data.less(a, j):
            j -= 1
        if i > j:
            break
        data.swap(i, j)
        i += 1
        j -= 1
    return i


def _partial_insertion_sort(data: _Data, a: int, b: int) -> bool:
    max_steps = 5
    shortest_shifting = 50
    i = a + 1
    for _ in range(max_steps):
        while i < b and not data.less(i, i - 1):
            i += 1
        if i == b:
            return True
        if b - a < shortest_shifting:
            return False
        data.swap(i, i - 1)
        if i - a >= 2:
            j = i - 1
            while j >= 1:
                if not data.less(j, j - 1):
                    break
                data.swap(j, j - 1)
                j -= 1
        if b - i >= 2:
            j = i + 1
            while j < b:
                if not data.less(j, j - 1):
                    break
                data.swap(j, j - 1)
                j += 1
    return False


def _break_patterns(data: _Data, a: int, b: int) -> None:
    length = b - a
    if length >= 8:
        r = length  # xorshift seeded with the length (Go 1.19 shifts: 13, 17, 5)
        modulus = 1 << length.bit_length()
        for idx in range(a + (length // 4) * 2 - 1, a + (length // 4) * 2 + 2):
            r ^= (r << 13) & _MASK64
            r ^= r >> 17
            r ^= (r << 5) & _MASK64
            other = r & (modulus - 1)
            if other >= length:
                other -= length
            data.swap(idx, a + other)


def _choose_pivot(data: _Data, a: int, b: int) -> tuple[int, int]:
    shortest_ninther = 50
    max_swaps = 4 * 3
    n = b - a
    swaps = [0]
    i = a + n // 4 * 1
    j = a + n // 4 * 2
    k = a + n // 4 * 3
    if n >= 8:
        if n >= shortest_ninther:
            i = _median(data, i - 1, i, i + 1, swaps)
            j = _median(data, j - 1, j, j + 1, swaps)
            k = _median(data, k - 1, k, k + 1, swaps)
        j = _median(data, i, j, k, swaps)
    if swaps[0] == 0:
        return j, _INCREASING
    if swaps[0] == max_swaps:
        return j, _DECREASING
    return j, _UNKNOWN


def _order2(data: _Data, a: int, b: int, swaps: list[int]) -> tuple[int, int]:
    if data.less(b, a):
        swaps[0] += 1
        return b, a
    return a, b


def _median(data: _Data, a: int, b: int, c: int, swaps: list[int]) -> int:
    a, b = _order2(data, a, b, swaps)
    b, c = _order2(data, b, c, swaps)
    a, b = _order2(data, a, b, swaps)
    return b


def _reverse_range(data: _Data, a: int, b: int) -> None:
    i, j = a, b - 1
    while i < j:
        data.swap(i, j)
        i += 1
        j -= 1
