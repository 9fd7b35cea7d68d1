"""The explorer with the ZipIt! baseline: chosen on the Step page, a layer zips (its shared
units in the timeline), and the Costs page shows the engine's reason instead of a share curve
(ZipIt! merges groups of units, which a per-share preview does not cover)."""

from __future__ import annotations

from app_helpers import goto, new_app, texts, ws

from explorer.state import K


def test_zipit_zips_a_layer_on_the_step_page():
    at = new_app()
    goto(at, "step")
    at.selectbox(key=K.SET_METHOD).set_value("zipit").run()
    at.button(key="step.apply_settings").click().run()
    assert not at.exception, [e.value for e in at.exception]
    z = ws(at).ensure_zip()
    assert z.session.config.method == "zipit"
    name = z.layers[z.next_index][0]
    at.button(key="step.zip").click().run()
    assert not at.exception, [e.value for e in at.exception]
    rec = ws(at).ensure_zip().session.records[-1]
    assert rec.name == name and rec.method == "zipit" and rec.clusters is not None
    goto(at, "costs")
    assert "merges groups of units" in texts(at, errors=True)
