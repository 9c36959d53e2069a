"""The webdataset error handler every shard reader uses: name the bad shard, count it once, go on."""
from __future__ import annotations

from typing import Callable, Iterator


class ShardErrorHandler:
    """Passed as webdataset's `handler`: warns naming the shard, reports each failing shard once, continues.

    `warn(message)` is called for every error; `on_bad_shard(where)` once per shard that failed.
    """

    def __init__(self, warn: Callable[[str], None], on_bad_shard: Callable[[str], None]) -> None:
        self.warn = warn
        self.on_bad_shard = on_bad_shard
        self.current = "?"  # the shard being read (set by `track`)
        self.failed: set[str] = set()

    def track(self, sources: Iterator[dict]) -> Iterator[dict]:
        """Pass opened shards through, remembering which one is being read."""
        for source in sources:
            self.current = str(source.get("url"))
            yield source

    def __call__(self, exn: Exception) -> bool:
        args = getattr(exn, "args", ())
        # webdataset appends the URL to the exception's args where it knows it.
        named = [a for a in args[1:] if isinstance(a, str)]
        where = named[-1] if named else self.current
        message = str(args[0]) if args else repr(exn)
        self.warn(f"shard {where} unreadable or truncated ({type(exn).__name__}: {message})")
        if where not in self.failed:
            self.failed.add(where)
            self.on_bad_shard(where)
        return True
