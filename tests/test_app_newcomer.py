"""The app as a newcomer meets it (issue 11): no stale results, each model described from its
own trace, errors that name the control to change, no work lost without a question, readable
tables. Every flow here failed before the change it covers."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")
from app_helpers import goto, load_demo, new_app, texts, wait_job, ws, zip_layer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _banners(at) -> str:
    return "\n".join(s.value for s in at.success) + "\n".join(w.value for w in at.warning)


# --------------------------------------------------------------------- 1. stale results


def test_a_retraining_banner_stays_with_its_pair_and_zip():
    at = goto(new_app(), "step")
    zip_layer(at, 150)
    at.number_input(key="step.rt_its").set_value(3).run()
    at.button(key="step.retrain").click().run()
    wait_job(at)
    assert "Retrained 3 iterations" in _banners(at)
    goto(at, "costs")
    assert "Retrained 3 iterations" in _banners(at), "same pair, same zip: still shown"
    load_demo(at, "digits-conv")
    assert ws(at).loaded.title != "digits-mlp"
    goto(at, "costs")
    assert "Retrained" not in _banners(at), "another pair's result must not show"


def test_an_evaluated_plan_shows_where_plans_are_read_not_on_an_unzipped_step_page():
    at = goto(new_app(), "costs")
    at.selectbox(key="costs.layer").set_value(1).run()
    at.button(key="costs.estimate").click().run()
    wait_job(at)
    assert "Plan evaluated" in _banners(at)
    goto(at, "sharing")
    assert "No layer is zipped yet" in texts(at)
    assert "Plan evaluated" not in _banners(at)
    goto(at, "tradeoff")
    assert "Plan evaluated" in _banners(at)


def test_the_dismiss_button_has_a_name():
    at = goto(new_app(), "step")
    zip_layer(at, 150)
    at.number_input(key="step.rt_its").set_value(2).run()
    at.button(key="step.retrain").click().run()
    wait_job(at)
    dismiss = at.button(key="job.dismiss")
    assert dismiss.label.strip(), "the × button needs an accessible name"
    dismiss.click().run()
    assert "Retrained" not in _banners(at)


# ------------------------------------------------------------- 3. errors speak the screen


def _state_dict_bytes(model) -> bytes:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def _checkpoint_bytes(model) -> bytes:
    from mtz_core.checkpoints import save_checkpoint

    path = Path(tempfile.mkdtemp()) / "m.safetensors"
    save_checkpoint(model, None, path)
    return path.read_bytes()


def _upload(at, which, name, data, task="digits:0-4", arch="(from the file's card)"):
    at.segmented_control(key="load.source").set_value("Upload checkpoints").run()
    at.file_uploader(key=f"load.file_{which}").set_value((name, data, "application/octet-stream"))
    at.selectbox(key=f"load.arch_{which}").set_value(arch)
    at.text_input(key=f"load.task_{which}").set_value(task)
    at.run()


def _upload_error(at, a: tuple, b: tuple | None = None) -> str:
    """Upload model A (and B: the demo's B when not given), press Load; the red error."""
    from mtz_core.demo import load_demo

    _upload(at, "a", *a)
    _upload(at, "b", *(b or ("b.pt", _state_dict_bytes(load_demo("digits-mlp").model_b))))
    if b is None:
        at.selectbox(key="load.arch_b").set_value("lenet300").run()
    at.text_input(key="load.task_b").set_value("digits:5-9").run()
    at.button(key="load.upload_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error, "the load must fail with a message"
    return "\n".join(e.value for e in at.error)


def test_a_text_file_renamed_pt_is_called_a_text_file_and_no_green_box_stays():
    at = new_app()
    said = _upload_error(at, ("notes.pt", (ROOT / "README.md").read_bytes()))
    assert "notes.pt is a text file" in said and "**Checkpoint A**" in said
    assert "IndexError" not in said and "pickled" not in said
    assert not any("can be zipped" in s.value for s in at.success), "no green box under the red"
    assert any(m.value.startswith("Still loaded") for m in at.subheader)


def test_unknown_keys_point_to_the_architecture_picker():
    keys = {"foo.weight": torch.zeros(3, 3)}
    buf = io.BytesIO()
    torch.save(keys, buf)
    said = _upload_error(new_app(), ("x.pt", buf.getvalue()))
    assert "**Architecture A** picker" in said
    assert "architecture=<" not in said and "num_classes=" not in said


def test_a_bare_resnet_is_named_and_a_small_task_points_to_the_npz_upload():
    from mtz_core.models.resnet import torchvision_resnet

    torch.manual_seed(0)
    net = torchvision_resnet("resnet18", 3, in_channels=1, width=0.125).eval()
    said = _upload_error(new_app(), ("r.pt", _state_dict_bytes(net)))
    assert "torchvision resnet18" in said, said
    assert "**Task A** → my .npz" in said


def test_a_vgg_on_small_images_names_the_task_control_not_load_task():
    from mtz_core.models import create_model

    net = create_model("vgg11", (1, 32, 32), 3, seed=0, width=0.125, avgpool_size=1)
    at = new_app()
    said = _upload_error(at, ("v.pt", _state_dict_bytes(net), "digits:0-4", "vgg11"))
    assert "load_task(" not in said and "pad_to" not in said, said
    assert "**Task A** → my .npz" in said


# ---------------------------------------------------------- 2. mismatched architectures


def _mismatched(at) -> None:
    """LeNet-300-100 as A, LeNet-5 as B (each with its card): they load, cannot be zipped."""
    from mtz_core.demo import load_demo

    mlp, conv = load_demo("digits-mlp"), load_demo("digits-conv")
    _upload(at, "a", "lenet300.safetensors", _checkpoint_bytes(mlp.model_a), "digits:0-4")
    _upload(at, "b", "lenet5.safetensors", _checkpoint_bytes(conv.model_a), conv.task_a.name)
    at.button(key="load.upload_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not ws(at).loaded.zippable


def test_each_model_of_a_mismatched_pair_is_described_from_its_own_trace():
    at = new_app()
    _mismatched(at)
    tables = [d.value for d in at.dataframe]
    assert not any("width B" in t.columns for t in tables), "B's layers under A's names"
    a, b = (t for t in tables if "width" in t.columns)  # one table per model
    assert list(a["layer"]) == ["fc1", "fc2", "fc3"] and list(a["role"])[-1] == "head"
    assert list(b["layer"]) == ["conv1", "conv2", "fc1", "fc2"]
    assert list(b["role"]) == ["hidden", "hidden", "hidden", "head"]
    assert list(b["kind"])[:2] == ["conv", "conv"]
    widths_b = " → ".join(str(w) for w in b["width"])
    captions = [c.value for c in at.caption]
    assert any(c.startswith(f"4 weight layers, widths {widths_b};") for c in captions), captions
    assert not any(c.startswith("3 weight layers, widths 8") for c in captions)
    assert any("cannot be zipped" in e.value for e in at.error)


def test_pages_needing_a_zippable_pair_say_why_instead_of_inventing_numbers():
    at = new_app()
    _mismatched(at)
    for page in ("costs", "step", "sharing", "tradeoff"):
        goto(at, page)
        shown = texts(at, errors=True)
        assert "cannot be zipped" in shown and "layer counts differ" in shown, page
    goto(at, "learn")
    shown = texts(at, errors=True)
    assert "Your models cannot be zipped" in shown and "moons-circles" in shown
    assert "sharing all 8 neurons" not in shown and "65 × 65" not in shown


# ------------------------------------------------------------------------------ 10. details

ENGINE_NAMES = {"predicted_error", "heldout_error", "n_a", "n_b", "a_only", "b_only", "s"}


def _no_none(table) -> bool:
    return not any(v is None or v == "None" for v in table.astype(object).to_numpy().ravel())


def test_tables_have_human_column_names_and_no_none_cells():
    at = goto(new_app(), "step")
    zip_layer(at, 150)
    at.number_input(key="step.rt_its").set_value(2).run()
    at.button(key="step.retrain").click().run()
    wait_job(at)
    history = at.dataframe[0].value
    assert list(history["step"]) == ["zip fc1", "retrain 2 its"]
    assert not ENGINE_NAMES & set(history.columns), list(history.columns)
    assert {"predicted error", "held-out error", "accuracy A"} <= set(history.columns)
    assert _no_none(history), "a retraining has no predicted error: '–', not None"
    goto(at, "sharing")
    shared = next(d.value for d in at.dataframe if "shared" in d.value.columns)
    assert {"neurons A", "only B"} <= set(shared.columns)
    assert not ENGINE_NAMES & set(shared.columns)
    goto(at, "costs")
    errors = next(d.value for d in at.dataframe if "layer" in d.value.columns)
    assert {"predicted error", "held-out error"} <= set(errors.columns)


def test_learn_shows_percentages_not_fractions():
    at = goto(new_app(), "learn")
    stages = next(d.value for d in at.dataframe if "stage" in d.value.columns)
    assert all(str(v).endswith("%") for v in stages["accuracy A (moons)"])
    assert _no_none(stages)


def test_the_app_runs_without_a_file_watcher():
    import tomllib

    from explorer.launch import SETTINGS

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"
    at = SETTINGS.index("--server.fileWatcherType")
    assert SETTINGS[at + 1] == "none"


# ---------------------------------------------------------------------- 5. work not lost


def test_loading_other_models_asks_before_discarding_the_zip():
    at = goto(new_app(), "step")
    zip_layer(at, 150)
    zipped = ws(at).zip
    goto(at, "load")
    at.selectbox(key="load.demo").set_value("digits-conv").run()
    at.button(key="load.demo_button").click().run()
    assert any("would be discarded" in w.value for w in at.warning)
    assert ws(at).zip is zipped and ws(at).loaded.title != "digits-conv", "nothing yet"
    at.button(key="load.keep_work").click().run()
    assert ws(at).pending is None and ws(at).zip is zipped
    at.button(key="load.demo_button").click().run()
    at.button(key="load.confirm").click().run()
    assert ws(at).zip is None and "LeNet-5" in ws(at).loaded.title


def test_trade_off_points_are_kept_per_pair():
    at = goto(new_app(), "step")
    zip_layer(at, 150)
    points = list(ws(at).points)
    assert points
    load_demo(at, "digits-conv")
    assert ws(at).points == []
    load_demo(at, "digits-mlp")
    assert ws(at).points == points, "the first pair's points come back with it"
    goto(at, "tradeoff")
    assert not any("No configuration evaluated yet" in i.value for i in at.info)


def test_load_and_learn_controls_survive_navigation():
    from mtz_core.demo import load_demo

    at = new_app()
    data = _state_dict_bytes(load_demo("digits-mlp").model_a)
    _upload(at, "a", "mine.pt", data, "digits:0-4", "lenet300")
    goto(at, "learn")
    at.slider(key="learn.share").set_value(0.5).run()
    goto(at, "costs")
    goto(at, "load")
    assert at.segmented_control(key="load.source").value == "Upload checkpoints"
    assert at.selectbox(key="load.arch_a").value == "lenet300"
    assert any("Kept from before: `mine.pt`" in c.value for c in at.caption)
    data_b = _state_dict_bytes(load_demo("digits-mlp").model_b)
    _upload(at, "b", "theirs.pt", data_b, "digits:5-9", "lenet300")
    at.button(key="load.upload_button").click().run()
    assert not at.error, [e.value for e in at.error]
    assert ws(at).loaded.models["a"]["name"] == "mine.pt", "the kept file was loaded"
    goto(at, "learn")
    assert at.slider(key="learn.share").value == 0.5


def test_a_reloaded_page_offers_to_restore_the_last_session():
    from app_helpers import APP
    from streamlit.testing.v1 import AppTest

    at = goto(new_app(), "step")
    zip_layer(at, 150)
    zip_layer(at, 40)
    before = ws(at).zip
    points = len(ws(at).points)
    sid = at.query_params["session"]
    assert sid, "the tab's id is in its address, which a reload keeps"
    # a reload: a new session at the same address
    again = AppTest.from_file(APP, default_timeout=120)
    again.query_params["session"] = sid
    again.run()
    assert not again.exception, [e.value for e in again.exception]
    assert ws(again).zip is None
    assert any("Your last session can be restored" in i.value for i in again.info)
    again.button(key="load.restore").click().run()
    wait_job(again)
    z = ws(again).zip
    assert z is not None and [r.k for r in z.records] == [150, 40]
    for mine, theirs in zip(z.records, before.records):
        assert (mine.pairs == theirs.pairs).all()
    assert len(ws(again).points) == points
    # another tab (no id) is not offered this one's work
    other = new_app()
    assert not any("last session" in i.value for i in other.info)


def test_readable_tables_and_text_files_without_the_app():
    from explorer.screen_errors import text_file_problem
    from explorer.tables import readable

    df = readable([{"n_a": 3, "a_only": 1, "predicted_error": None, "acc_b": 0.5, "s": 1.0}])
    assert list(df.columns) == ["neurons A", "only A", "predicted error", "accuracy B", "seconds"]
    assert df["predicted error"].tolist() == ["–"] and df["accuracy B"].tolist() == [0.5]
    assert text_file_problem("a.pt", b"hello\n") is not None
    assert text_file_problem("a.pt", b"PK\x03\x04rest") is None  # torch.save's zip
    assert text_file_problem("a.pt", b"\x80\x02}q\x00.") is None  # an old pickle
    assert text_file_problem("a.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{}") is None


def test_a_bad_task_text_names_its_box():
    from mtz_core.demo import load_demo

    demo = load_demo("digits-mlp")
    at = new_app()
    _upload(at, "a", "a.safetensors", _checkpoint_bytes(demo.model_a), "nosuchdata:1-2")
    _upload(at, "b", "b.safetensors", _checkpoint_bytes(demo.model_b), "digits:5-9")
    at.button(key="load.upload_button").click().run()
    assert any("**Task text A**" in e.value for e in at.error), [e.value for e in at.error]


# ------------------------------------------------------------ 7. a scale for the errors


def _energy(pair, layer: str) -> float:
    """Σ over tasks of ½ mean ‖y‖² of `layer`'s output on the calibration samples, by hand."""
    from explorer.zipper import ZipSettings

    s, total = ZipSettings(), 0.0
    for net, task in zip(pair.nets, pair.tasks):
        outs = []
        hook = net.get_submodule(layer).register_forward_hook(lambda m, a, y, o=outs: o.append(y))
        with torch.no_grad():
            for x, _ in task.batches("calib", s.batch_size, limit=s.calib_samples):
                net(x)
        hook.remove()
        y = torch.cat(outs).double()
        total += 0.5 * float(y.pow(2).sum(1).mean())
    return total


def test_predicted_errors_are_shown_as_a_share_of_the_layers_output_energy():
    at = goto(new_app(), "costs")
    energy = _energy(ws(at).loaded, "fc1")
    z = ws(at).zip
    assert z.output_energy(0) == pytest.approx(energy, rel=1e-6)
    metric = next(m for m in at.metric if m.label == "Predicted layer error")
    shown = z.cost_view(0).predicted(at.slider(key="plan.costs.fc1").value)
    assert metric.delta == f"{shown / energy:.2%} of output energy", metric.delta
    goto(at, "step")
    assert "of the layer's output energy" in texts(at)  # the next layer's preview
    zip_layer(at, 150)
    event = z.events[-1]
    share = f"{event['predicted_error'] / energy:.2%}"
    assert f"({share} of the layer's output energy" in texts(at)
    (hist,) = [d.value for d in at.dataframe if "of output energy" in d.value.columns]
    assert list(hist["of output energy"]) == [share]
    goto(at, "learn")
    table = next(d.value for d in at.dataframe if "of the layer's output energy" in d.value)
    assert list(table["of the layer's output energy"])[0] == "–"
    assert all(v.endswith("%") for v in list(table["of the layer's output energy"])[1:])


def _order(at) -> list:
    """Every element of the page, in the order it is drawn."""

    def walk(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    return list(walk(at.main))


def _position(nodes: list, test) -> int:
    return next(i for i, n in enumerate(nodes) if test(n))


def _reload(at):
    from app_helpers import APP
    from streamlit.testing.v1 import AppTest

    again = AppTest.from_file(APP, default_timeout=120)
    again.query_params["session"] = at.query_params["session"]
    again.run()
    assert not again.exception, [e.value for e in again.exception]
    return again


def _zip_uploaded_pair(at) -> None:
    """The digits MLP pair uploaded as two files (with their cards), two layers zipped."""
    from mtz_core.demo import load_demo

    demo = load_demo("digits-mlp")
    _upload(at, "a", "mine_a.safetensors", _checkpoint_bytes(demo.model_a), "digits:0-4")
    _upload(at, "b", "mine_b.safetensors", _checkpoint_bytes(demo.model_b), "digits:5-9")
    at.button(key="load.upload_button").click().run()
    confirm = [b for b in at.button if b.key == "load.confirm"]
    if confirm:
        confirm[0].click().run()
    assert ws(at).loaded.models["a"]["name"] == "mine_a.safetensors"
    goto(at, "step")
    zip_layer(at, 150)
    zip_layer(at, 40)


def test_a_session_on_uploaded_files_restores_without_a_reupload():
    at = new_app()
    _zip_uploaded_pair(at)
    before = ws(at).zip
    again = _reload(at)
    offer = next(i.value for i in again.info if "last session can be restored" in i.value)
    assert "load them again" not in offer, offer
    again.button(key="load.restore").click().run()
    wait_job(again)
    assert not again.error, [e.value for e in again.error]
    loaded, z = ws(again).loaded, ws(again).zip
    assert [loaded.models[x]["name"] for x in "ab"] == ["mine_a.safetensors", "mine_b.safetensors"]
    assert z is not None and [r.k for r in z.records] == [150, 40]
    for mine, theirs in zip(z.records, before.records):
        assert (mine.pairs == theirs.pairs).all()


def test_files_over_the_cap_are_not_kept_and_the_offer_says_so(monkeypatch):
    from explorer import autosave

    monkeypatch.setattr(autosave, "KEEP_FILES_MAX_BYTES", 1000)
    at = new_app()
    _zip_uploaded_pair(at)
    again = _reload(at)
    offer = next(i.value for i in again.info if "last session can be restored" in i.value)
    assert "over the 1 kB the app keeps" in offer and "**Load these models**" in offer, offer
    again.button(key="load.restore").click().run()
    assert any("load them again" in e.value for e in again.error)
    assert ws(again).zip is None


def test_the_restore_and_confirm_boxes_do_not_move_the_upload_form():
    at = new_app()
    _zip_uploaded_pair(at)
    again = _reload(again_from := at)
    assert again_from is at
    nodes = _order(again)
    offer = _position(
        nodes, lambda n: "last session can be restored" in str(getattr(n, "value", ""))
    )
    title = _position(nodes, lambda n: getattr(n, "type", None) == "title")
    assert offer < title, "the offer sits above the title, not between it and the form"
    # a load that would discard the zip asks beside its button, under the form
    goto(at, "load")
    at.button(key="load.upload_button").click().run()
    nodes = _order(at)
    ask = _position(nodes, lambda n: "would be discarded" in str(getattr(n, "value", "")))
    button = _position(nodes, lambda n: getattr(n, "key", None) == "load.upload_button")
    uploader = _position(nodes, lambda n: getattr(n, "key", None) == "load.file_a")
    assert uploader < button < ask


def test_a_yes_no_column_with_gaps_is_sent_as_text():
    """The Step history's pseudo-inverse column (no value on retraining rows): bools beside "–"
    could not be sent to the browser (Arrow), so Streamlit logged a traceback each redraw."""
    import pyarrow as pa

    from explorer.tables import readable

    df = readable([{"pseudo_inverse": False}, {"pseudo_inverse": None}])
    assert list(df["pseudo-inverse"]) == ["no", "–"]
    pa.Table.from_pandas(df)  # raised ArrowInvalid before
