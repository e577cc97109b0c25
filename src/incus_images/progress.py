"""Ready-made progress displays for ``images.create(progress=...)`` and
``images.export(progress=...)``.

A progress callback is any callable taking (bytes_done, bytes_total), where bytes_total is None
when the size is not known in advance; these adapters are conveniences on top of that.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

__all__ = ["TqdmProgress"]


class TqdmProgress:
    """A tqdm progress bar, from ``tqdm.auto``: a widget in Jupyter, text in a terminal.

        from incus_images.progress import TqdmProgress

        with TqdmProgress("importing") as bar:
            client.images.create("image.tar.gz", progress=bar)

    Needs tqdm: ``pip install '.[progress]'`` in a checkout of incus_images (once it is
    published: ``pip install 'incus_images[progress]'``). Keyword arguments go to tqdm.
    """

    def __init__(self, description: str | None = None, **options: Any) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as exc:
            raise ImportError(
                "TqdmProgress needs tqdm: pip install '.[progress]' in a checkout of incus_images"
                " (once it is published: pip install 'incus_images[progress]')"
            ) from exc
        options = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, **options}
        self.bar = tqdm(desc=description, **options)

    def __call__(self, done: int, total: int | None) -> None:
        if total != self.bar.total:
            self.bar.total = total
            self.bar.refresh()
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
