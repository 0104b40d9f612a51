"""Recipes: loading with base inheritance, line numbers, overrides, whole-recipe validation, the resolved form."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import FAKE
from ranged_components import marked_module

from vvframe.core import recipe as recipes
from vvframe.core.errors import RecipeError

GOOD = """\
name: demo
seed: 7
stages: [write]
data: {root: /data/demo, sample_rate: 8000}
trainer: {epochs: 2}
frontend: {name: fake_fbank, n_mels: 24}
model: {name: tiny, embed_dim: 12}
loss: {name: margin_loss, margin: 0.3}
augment: [{name: hiss, prob: 0.4}]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def problems(exc_info) -> list[str]:
    return [str(p) for p in exc_info.value.problems]


def test_a_good_recipe_resolves_with_components_and_settings(fake_registry, tmp_path):
    resolved = recipes.check(write(tmp_path / "demo.yaml", GOOD))
    assert (resolved.name, resolved.seed, [s.name for s in resolved.stages]) == ("demo", 7, ["write"])
    assert resolved.components["model"].args == {"embed_dim": 12}
    assert [c.name for c in resolved.components["augment"]] == ["hiss"]
    args = resolved.stage_arguments(resolved.stages[0])
    assert args["trainer"].epochs == 2 and args["trainer"].batch_size == 8
    assert args["data"].root == Path("/data/demo")
    assert args["loss"].args == {"margin": 0.3}


def test_base_chain_is_relative_to_each_file_and_the_top_file_wins(fake_registry, tmp_path):
    write(tmp_path / "base" / "common.yaml", "seed: 1\ndata: {root: /a, sample_rate: 8000}\nstages: [write]\n")
    write(tmp_path / "base" / "model.yaml", "base: common.yaml\nmodel: {name: tiny, embed_dim: 4, dropout: 0.1}\n")
    top = write(tmp_path / "exp" / "top.yaml", "base: ../base/model.yaml\nmodel: {embed_dim: 8}\ndata: {root: /b}\n")
    resolved = recipes.check(top)
    assert resolved.components["model"].args == {"embed_dim": 8, "dropout": 0.1}
    assert resolved.stage_arguments(resolved.stages[0])["data"].root == Path("/b")
    assert resolved.seed == 1 and resolved.name == "top"
    assert recipes.load(top).origin("model.dropout") == f"{tmp_path / 'base' / 'model.yaml'}:2"


def test_a_base_list_merges_in_order(fake_registry, tmp_path):
    write(tmp_path / "a.yaml", "seed: 1\nstages: [write]\n")
    write(tmp_path / "b.yaml", "seed: 2\n")
    top = write(tmp_path / "top.yaml", "base: [a.yaml, b.yaml]\n")
    assert recipes.load(top).data == {"seed": 2, "stages": ["write"]}


def test_changing_a_components_name_replaces_its_arguments(fake_registry, tmp_path):
    write(tmp_path / "a.yaml", "model: {name: tiny, dropout: 0.5}\n")
    top = write(tmp_path / "top.yaml", "base: a.yaml\nmodel: {name: tiny_v2}\n")
    assert recipes.load(top).data["model"] == {"name": "tiny_v2"}


def test_a_base_cycle_is_an_error_showing_the_chain(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError) as info:
        recipes.load(tmp_path / "a.yaml")
    a, b = (tmp_path / "a.yaml").resolve(), (tmp_path / "b.yaml").resolve()
    assert problems(info) == [f"base: base cycle: {a} -> {b} -> {a}"]


def test_a_missing_recipe_file_is_named_with_a_suggestion(tmp_path):
    write(tmp_path / "quickstart.yaml", "seed: 1\n")
    with pytest.raises(RecipeError) as info:
        recipes.load(tmp_path / "quikstart.yaml")
    assert problems(info) == [
        f"recipe file {tmp_path / 'quikstart.yaml'} does not exist (did you mean 'quickstart.yaml'?)"
    ]


def test_a_missing_base_file_is_reported_where_it_is_named(tmp_path):
    top = write(tmp_path / "top.yaml", "seed: 1\nbase: nothere.yaml\n")
    with pytest.raises(RecipeError) as info:
        recipes.load(top)
    assert problems(info) == [f"base ({top}:2): recipe file {tmp_path / 'nothere.yaml'} does not exist"]


def test_a_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = write(tmp_path / "bad.yaml", "name: x\nmodel: {name: tiny\nseed: 3\n")
    with pytest.raises(RecipeError) as info:
        recipes.load(bad)
    (message,) = problems(info)
    assert message.startswith(f"{bad}:3:5: YAML syntax error:"), message


def test_a_yaml_error_in_a_base_file_names_the_base(tmp_path):
    write(tmp_path / "base.yaml", "a: [1, 2\n")
    with pytest.raises(RecipeError) as info:
        recipes.load(write(tmp_path / "top.yaml", "base: base.yaml\n"))
    assert problems(info)[0].startswith(f"{tmp_path / 'base.yaml'}:2:")


def test_duplicate_keys_are_reported(tmp_path):
    with pytest.raises(RecipeError) as info:
        recipes.load(write(tmp_path / "dup.yaml", "seed: 1\nseed: 2\n"))
    assert problems(info) == [f"seed ({tmp_path / 'dup.yaml'}:2): duplicate key (the later value would silently win)"]


def test_overrides_set_values_as_yaml_scalars_and_record_their_origin(fake_registry, tmp_path):
    path = write(tmp_path / "demo.yaml", GOOD)
    recipe = recipes.load(
        path,
        [
            "trainer.epochs=5",
            "model.dropout=1e-1",
            "augment.0.prob=0.9",
            "loss=null",
            "frontend=fake_fbank",
            "trainer.precision=bf16",
        ],
    )
    assert recipe.data["trainer"] == {"epochs": 5, "precision": "bf16"}
    assert recipe.data["augment"][0]["prob"] == 0.9 and recipe.data["loss"] is None
    assert recipe.origin("model.dropout") == "command-line override 2 (model.dropout=1e-1)"
    resolved = recipes.resolve(recipe)
    assert resolved.components["model"].args["dropout"] == 0.1
    assert resolved.components["loss"] is None and resolved.components["frontend"].args == {}


def test_an_override_can_fill_a_disabled_component_or_a_shorthand(fake_registry, tmp_path):
    path = write(tmp_path / "demo.yaml", "stages: [write]\ndata: {root: /x}\nmodel: tiny\nloss: null\n")
    recipe = recipes.load(path, ["model.embed_dim=3", "loss.name=margin_loss"])
    assert recipe.data["model"] == {"name": "tiny", "embed_dim": 3}
    assert recipe.data["loss"] == {"name": "margin_loss"}


def test_an_override_of_a_key_that_exists_nowhere_names_the_closest_key(fake_registry, tmp_path):
    path = write(tmp_path / "demo.yaml", GOOD)
    with pytest.raises(RecipeError) as info:
        recipes.check(path, ["trainer.epochz=5", "model.embed_dims=3", "traner.epochs=2"])
    assert problems(info) == [
        "trainer.epochz (command-line override 1 (trainer.epochz=5)): unknown argument 'epochz' for section"
        " 'trainer' (read by stage 'write') (did you mean 'epochs'?); it accepts: epochs=3, batch_size=8,"
        " precision='fp32'",
        "model.embed_dims (command-line override 2 (model.embed_dims=3)): unknown argument 'embed_dims' for models"
        " 'tiny' (did you mean 'embed_dim'?); it accepts: embed_dim=16, dropout=0.0, widths=(8,)",
        "traner (command-line override 3 (traner.epochs=2)): unknown section 'traner' (did you mean 'trainer'?);"
        " no installed stage reads it",
    ]


def test_malformed_overrides(tmp_path):
    path = write(tmp_path / "demo.yaml", "stages: [write]\naugment: [{name: hiss}]\nseed: 3\n")
    with pytest.raises(RecipeError) as info:
        recipes.load(path, ["epochs", "augment.3.prob=1", "seed.x=1", "a.b=[1,"])
    got = problems(info)
    assert got[0] == "command-line override 1 (epochs): an override is key.path=value (e.g. trainer.epochs=2)"
    assert got[1].startswith("augment.3 (command-line override 2 (augment.3.prob=1)): '3' is not an index")
    assert got[2] == (
        "seed (command-line override 3 (seed.x=1)): 'seed' is a value (3), not a section; set it with seed=..."
    )
    assert got[3].startswith("a.b (command-line override 4 (a.b=[1,)): the value is not valid YAML")


def test_every_problem_is_reported_at_once_with_path_and_origin(fake_registry, tmp_path):
    path = write(
        tmp_path / "bad.yaml",
        """\
        name: bad
        stages: [write, trian]
        data: {root: /x, sample_rate: fast}
        model: {name: tinny}
        loss: {name: margin_loss, margn: 0.3}
        augment: [{name: hiss}, {name: hsis}]
        optimizer: {name: sgd, lr: abc}
        """,
    )
    with pytest.raises(RecipeError) as info:
        recipes.check(path)
    got = problems(info)
    f = str(path)
    assert got[1:] == [
        f"data.sample_rate ({f}:3): expected an integer, got 'fast'",
        f"model.name ({f}:4): no models component named 'tinny' is installed (did you mean 'tiny'?)"
        " (`vvframe plugins models` lists all 2)",
        f"loss.margn ({f}:5): unknown argument 'margn' for losses 'margin_loss' (did you mean 'margin'?);"
        " it accepts: margin=0.2, scale=30.0",
        f"augment.1.name ({f}:6): no augmentors component named 'hsis' is installed (did you mean 'hiss'?)"
        " (`vvframe plugins augmentors` lists all 3)",
        f"optimizer.lr ({f}:7): expected a number, got 'abc'",
    ]
    assert got[0].startswith(f"stages.1 ({f}:2): no stages component named 'trian'")
    assert str(info.value).startswith(f"{f}: 6 problems\n  stages.1")


def test_a_missing_required_argument_is_named_with_its_path_and_type(fake_registry, tmp_path):
    path = write(tmp_path / "r.yaml", GOOD.replace("prob: 0.4}]", "prob: 0.4}, {name: boost}]"))
    with pytest.raises(RecipeError) as info:
        recipes.check(path)
    assert problems(info) == [f"augment.1.db ({path}:9): missing required argument 'db' for augmentors 'boost' (float)"]


def test_settings_sections_come_from_stage_signatures(fake_registry, tmp_path):
    path = write(tmp_path / "r.yaml", "stages: [write]\nmodel: tiny\n")
    with pytest.raises(RecipeError) as info:
        recipes.check(path)
    assert problems(info) == [f"data ({path}): missing section 'data', required by stage 'write' (it needs root)"]
    # an absent section whose fields all have defaults is built from them
    resolved = recipes.check(path, ["data.root=/d"])
    assert resolved.stage_arguments(resolved.stages[0])["trainer"].epochs == 3


def test_a_section_read_only_by_a_stage_not_in_the_recipe_is_still_checked(fake_registry, tmp_path):
    fake_registry({**FAKE, "stages": {"write": FAKE["stages"]["write"], "fail": FAKE["stages"]["fail"]}})
    path = write(tmp_path / "r.yaml", "stages: [fail]\ndata: {root: /d, sample_rat: 8000}\n")  # only 'write' reads data
    with pytest.raises(RecipeError) as info:
        recipes.check(path)
    assert problems(info) == [
        f"data.sample_rat ({path}:2): unknown argument 'sample_rat' for section 'data' (read"
        " by stage 'write') (did you mean 'sample_rate'?); it accepts: root, sample_rate=16000"
    ]
    resolved = recipes.check(write(tmp_path / "ok.yaml", "stages: [fail]\ndata: {root: /d}\n"))
    assert {section for section, _ in resolved.settings} == {"trainer", "data"}
    assert resolved.to_dict()["data"] == {"root": "/d", "sample_rate": 16000}


def test_a_missing_component_section_required_by_a_stage(fake_registry, tmp_path):
    path = write(tmp_path / "r.yaml", "stages: [write]\ndata: {root: /d}\n")
    with pytest.raises(RecipeError) as info:
        recipes.check(path)
    assert problems(info) == [
        f"model ({path}): missing section 'model' (models), required by stage 'write'"
        " (`vvframe plugins models` lists choices)"
    ]


def test_kernel_keys_are_checked(fake_registry, tmp_path):
    path = write(tmp_path / "r.yaml", "name: 'a b'\nseed: one\nstages: []\n")
    with pytest.raises(RecipeError) as info:
        recipes.check(path)
    got = problems(info)
    assert got[0].startswith("name (") and "usable as a directory" in got[0]
    assert got[1].endswith("seed: expected an integer, got 'one'".split(": ", 1)[1]) and got[1].startswith("seed (")
    assert got[2].startswith("stages (") and "non-empty list" in got[2]


def test_unknown_sections_are_not_judged_when_a_stage_is_missing(fake_registry, tmp_path):
    path = write(tmp_path / "r.yaml", "stages: [train]\ntrainer: {epochs: 2}\n")
    with pytest.raises(RecipeError) as info:
        recipes.check(path)
    got = problems(info)
    assert got[0].startswith("stages.0 (") and "no stages component named 'train'" in got[0]
    assert got[1] == (
        "section(s) trainer not checked: a stage above could not be resolved, and stages define"
        " the settings sections they read"
    )


def test_a_stage_breaking_the_stage_contract_is_reported(fake_registry, tmp_path):
    fake_registry({"stages": {"untyped": "fake_components:untyped_stage"}})
    with pytest.raises(RecipeError) as info:
        recipes.check(write(tmp_path / "r.yaml", "stages: [untyped]\n"))
    assert "parameter 'settings' names a settings section, so it needs a schema annotation" in problems(info)[0]


def test_the_resolved_recipe_has_defaults_and_provenance_and_reloads_to_the_same(fake_registry, tmp_path):
    resolved = recipes.check(write(tmp_path / "demo.yaml", GOOD))
    data = resolved.to_dict()
    assert data["model"] == {"name": "tiny", "embed_dim": 12, "dropout": 0.0, "widths": [8]}
    assert data["trainer"] == {"epochs": 2, "batch_size": 8, "precision": "fp32"}
    assert data["data"] == {"root": "/data/demo", "sample_rate": 8000}
    assert data["plugins"]["model"] == {
        "entry_point": "vvframe.models: tiny = fake_components:Model",
        "distribution": "-",
    }
    assert set(data["plugins"]) == {"frontend", "model", "loss", "augment.0", "stages.0"}
    snapshot = write(tmp_path / "snap.yaml", recipes.dump(data))
    again = recipes.check(snapshot).to_dict()
    assert again == data
    assert yaml.safe_load(recipes.dump(data)) == data


def test_a_loss_needing_more_utterances_per_speaker_than_the_sampler_gives_is_a_recipe_error(fake_registry, tmp_path):
    path = write(
        tmp_path / "r.yaml",
        GOOD.replace("name: margin_loss, margin: 0.3", "name: pair_loss") + "sampler: {name: groups}\n",
    )
    with pytest.raises(RecipeError) as info:
        recipes.check(path)
    assert problems(info) == [
        f"sampler ({path}:10): losses 'pair_loss' needs at least 2 utterances of a speaker in"
        " a batch (its min_per_speaker), and samplers 'groups' gives 1 (per_speaker); give the"
        " sampler per_speaker: 2 or more"
    ]
    assert recipes.check(path, ["sampler.per_speaker=2"]).components["sampler"].args == {"per_speaker": 2}
    assert recipes.check(path, ["loss.name=margin_loss"])  # a classification loss is happy with one


def test_a_required_component_section_set_to_null_names_the_stages_that_need_it(fake_registry, tmp_path):
    fake_registry({**FAKE, "stages": {"write": FAKE["stages"]["write"], "copy": FAKE["stages"]["write"]}})
    path = write(tmp_path / "r.yaml", GOOD)
    with pytest.raises(RecipeError) as info:
        recipes.check(path, ["model=null"])
    assert problems(info) == [
        "model (command-line override 1 (model=null)): section 'model' is null, but stage"
        " 'write' requires it: name a component there, e.g. model: {name: ...}"
        " (`vvframe plugins models` lists choices)"
    ]
    with pytest.raises(RecipeError) as info:
        recipes.check(path, ["stages=[write, copy]", "model=null"])
    assert problems(info)[0].startswith(
        "model (command-line override 2 (model=null)): section 'model' is null, but stages 'write', 'copy' require it: "
    )
    # sections the stage can do without stay optional
    resolved = recipes.check(path, ["frontend=null", "loss=null", "augment=null"])
    assert resolved.components["frontend"] is None and resolved.components["augment"] == []
    assert resolved.stage_arguments(resolved.stages[0])["loss"] is None


def test_a_number_outside_its_range_names_the_key_the_origin_and_the_range(fake_registry, tmp_path):
    fake_registry({**FAKE, "augmentors": {"hiss": "ranged_components:hiss"}})
    path = write(tmp_path / "r.yaml", GOOD.replace("prob: 0.4", "prob: 1.4"))
    with pytest.raises(RecipeError) as info:
        recipes.check(path, ["augment.0.snr=[0, 99]"])
    assert problems(info) == [
        f"augment.0.prob ({path}:9): expected a number in [0, 1], got 1.4",
        "augment.0.snr.1 (command-line override 1 (augment.0.snr=[0, 99])): expected a number in [-20, 60], got 99",
    ]


def test_a_reference_in_a_recipe_is_checked_without_being_called(fake_registry, tmp_path, monkeypatch):
    module = marked_module(tmp_path, monkeypatch)
    path = write(
        tmp_path / "r.yaml",
        f"stages: ['{module}:stage']\nmodel: {{name: '{module}:Model', embed_dim: 4}}\ntrainer: {{steps: 2}}\n",
    )
    resolved = recipes.check(path)
    assert resolved.components["model"].args == {"embed_dim": 4}
    assert resolved.stage_arguments(resolved.stages[0])["trainer"].steps == 2
    with pytest.raises(RecipeError) as info:
        recipes.check(path, ["model.embed_dims=3", "trainer.steps=x"])
    assert [p.path for p in info.value.problems] == ["model.embed_dims", "trainer.steps"]
    assert (tmp_path / "imported").exists() and not (tmp_path / "called").exists()


def test_references_false_refuses_references_in_stages_and_sections(fake_registry, tmp_path, monkeypatch):
    module = marked_module(tmp_path, monkeypatch)
    text = f"stages: [write, '{module}:stage']\ndata: {{root: /d}}\nmodel: '{module}:Model'\n"
    loaded = recipes.load(write(tmp_path / "recipe.yaml", text))
    with pytest.raises(RecipeError) as info:
        recipes.resolve(loaded, references=False)
    assert [(p.path, "names a Python object directly" in p.message) for p in info.value.problems] == [
        ("stages.1", True),
        ("model.name", True),
    ]
    assert not (tmp_path / "imported").exists()
    assert recipes.resolve(recipes.load(write(tmp_path / "ok.yaml", GOOD)), references=False).name == "demo"
