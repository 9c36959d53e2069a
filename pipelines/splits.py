"""Train/val/test splits by identity: deterministic from the identity and a seed."""
from __future__ import annotations

import hashlib


def identity_hash(identity: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the identity and the seed."""
    digest = hashlib.sha256(f"{seed}:{identity}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(identities: list[str], fractions: dict[str, float], seed: int,
                  method: str = "balanced") -> dict[str, str]:
    """Map each identity to a split name; no identity is in two splits.

    `hash`: each identity falls where its own hash lands among the cumulative fractions, so
    adding identities never moves the others. `balanced`: identities ranked by hash are cut by
    the fractions (largest remainder), so small corpora get every split with a positive fraction.
    """
    names = [name for name, share in fractions.items() if share > 0]
    total = sum(fractions[name] for name in names)
    if not names or total <= 0:
        raise ValueError(f"split fractions must have a positive entry, got {fractions}")
    unique = sorted(set(identities))
    ranked = sorted(unique, key=lambda ident: (identity_hash(ident, seed), ident))
    if method == "hash":
        out = {}
        for ident in unique:
            point, edge = identity_hash(ident, seed) * total, 0.0
            for name in names:
                edge += fractions[name]
                if point < edge:
                    out[ident] = name
                    break
            else:
                out[ident] = names[-1]
        return out
    if method != "balanced":
        raise ValueError(f"unknown split method {method!r} (use 'balanced' or 'hash')")
    counts = _largest_remainder(len(ranked), [fractions[name] / total for name in names])
    out, position = {}, 0
    for name, count in zip(names, counts):
        for ident in ranked[position:position + count]:
            out[ident] = name
        position += count
    return out


def _largest_remainder(n: int, shares: list[float]) -> list[int]:
    """Integer counts summing to n, proportional to shares, each >= 1 when n allows."""
    raw = [n * share for share in shares]
    counts = [int(value) for value in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    if n >= len(counts):
        # Every split with a positive share gets at least one identity, taken from the largest.
        for i, count in enumerate(counts):
            if count == 0:
                counts[counts.index(max(counts))] -= 1
                counts[i] = 1
    return counts
