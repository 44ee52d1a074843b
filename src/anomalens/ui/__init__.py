"""The web UI (Gradio): inspect images, analyse video, train, evaluate; a thin layer over the library.

Gradio is imported only when a page is built (it takes seconds to import), so ``import anomalens.ui`` is cheap.

>>> from anomalens.ui import UISettings, launch
>>> launch(UISettings(results_dir="results", data_roots=["data"]), port=7860)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from anomalens.ui.common import UISettings

__all__ = ["UISettings", "build_app", "launch"]


def build_app(settings: UISettings) -> Any:
    from anomalens.ui.app import build_app as _build

    return _build(settings)


def launch(settings: UISettings, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None, block: bool = True) -> Any:
    from anomalens.ui.app import launch as _launch

    return _launch(settings, host=host, port=port, auth=auth, block=block)
