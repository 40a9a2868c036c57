"""Kumar & Bhavsar's bagging (Sec. IV-B1): with many more fakes than reals in Celeb-DF, they split the
data into seven equal parts and trained one model per part on "1400 videos each time" (about 5,639 / 7
fakes + the 590 reals), then took the maximum vote of the seven. Here: the larger class is partitioned
into K disjoint equal parts; each member trains on one part and on as many faces of the smaller class
(all of it when it is no larger than a part, else a random subset of a part's size), so every member's
set is balanced. On a balanced set this is K disjoint balanced subsets. Torch-free.
"""
from __future__ import annotations

import random
from typing import Sequence, TypeVar

R = TypeVar("R")


def bag_subset(records: Sequence[R], labels: Sequence[int], bag: int, bags: int, seed: int = 0) -> list[R]:
    """Member `bag` of `bags`: its part of the larger class plus a balanced share of the smaller one."""
    if bags < 2:
        return list(records)
    if not 0 <= bag < bags:
        raise ValueError(f"bag {bag} outside 0..{bags - 1}")
    by_label = {c: [r for r, y in zip(records, labels) if y == c] for c in (0, 1)}
    major, minor = sorted(by_label, key=lambda c: (-len(by_label[c]), c))
    rng = random.Random(seed)
    majority = list(by_label[major])
    rng.shuffle(majority)
    parts = [majority[i::bags] for i in range(bags)]  # disjoint, sizes differ by at most one
    part = parts[bag]
    minority = list(by_label[minor])
    rng.shuffle(minority)
    if len(minority) > len(part):
        # disjoint slices of the smaller class too, while it lasts: members overlap as little as possible
        start = (bag * len(part)) % len(minority)
        minority = (minority[start:] + minority[:start])[:len(part)]
    chosen = part + minority
    random.Random(seed * 1000 + bag).shuffle(chosen)
    return chosen
