"""One module per tab of the web UI: its pure handlers (plain values in, plain values or dataclasses out,
testable without a browser) and ``build(...)``, its Gradio layout and wiring.

Tabs: :mod:`.inspect` (images), :mod:`.video`, :mod:`.train`, :mod:`.evaluate`, :mod:`.help`. A new tab is a new
module here, added to :data:`anomalens.ui.app.TABS`.
"""
