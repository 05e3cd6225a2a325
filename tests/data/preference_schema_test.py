"""The preference JSONL schema: what passes, what fails and what the errors say."""

import importlib.util
import pathlib

import pytest

# Loaded from its file: the package `batgpt_jax.data` imports TensorFlow, the schema does not.
_PATH = (pathlib.Path(__file__).resolve().parents[2] / "src" / "batgpt_jax" / "data"
         / "preference_schema.py")
_spec = importlib.util.spec_from_file_location("_preference_schema_under_test", _PATH)
schema = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(schema)

FULL = {"prompt": "Name a prime.", "chosen": "7", "rejected": "8", "tie": False, "margin": 2.0,
        "p_chosen": 0.75, "source": "human", "weight": 4.0, "flags": ["harm:none"]}


def test_full_and_minimal_records_pass_unchanged():
  assert schema.validate_record(dict(FULL)) == FULL
  dialogue = {"messages": [{"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "hello"},
                           {"role": "user", "content": "a prime?"}],
              "chosen": "7", "rejected": "8"}
  assert schema.validate_record(dict(dialogue)) == dialogue


@pytest.mark.parametrize("change, field, hint", [
    ({"prompt": None}, "prompt", "not both"),                 # neither prompt nor messages
    ({"messages": [{"role": "user", "content": "x"}]}, "prompt", "not both"),
    ({"chosen": 7}, "chosen", "Add 'chosen'"),
    ({"rejected": None}, "rejected", "Add 'rejected'"),
    ({"tie": "yes"}, "tie", "boolean"),
    ({"margin": -1.0}, "margin", "Swap chosen and rejected"),
    ({"p_chosen": 1.5}, "p_chosen", "probability"),
    ({"p_chosen": float("nan")}, "p_chosen", "probability"),
    ({"source": "crowd"}, "source", "('human', 'ai')"),
    ({"weight": 0}, "weight", "> 0"),
    ({"flags": "both_bad"}, "flags", "list of strings"),
    ({"score": 1}, "score", "Drop the field"),
])
def test_bad_fields_are_named_with_a_fix(change, field, hint):
  record = dict(FULL, **change)
  if change.get("prompt", "") is None:
    del record["prompt"]
  if change.get("rejected", "") is None:
    del record["rejected"]
  with pytest.raises(ValueError) as err:
    schema.validate_record(record)
  assert f"'{field}'" in str(err.value)
  assert hint in str(err.value)


def test_bad_dialogue_turn_is_named():
  record = {"messages": [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}],
            "chosen": "a", "rejected": "b"}
  with pytest.raises(ValueError, match=r"messages\[1\]\.role"):
    schema.validate_record(record)


def test_write_then_read_round_trips_and_is_byte_stable(tmp_path):
  records = [FULL, {"prompt": "中文", "chosen": "是", "rejected": "否", "tie": True,
                    "p_chosen": 0.5}]
  first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  assert schema.write_jsonl(first, records) == 2
  schema.write_jsonl(second, list(reversed(list(reversed(records)))))
  assert first.read_bytes() == second.read_bytes()
  assert "中文" in first.read_text(encoding="utf-8")  # UTF-8, not \u escapes
  assert list(schema.read_jsonl(first)) == records
  assert not (tmp_path / "a.jsonl.tmp").exists()


def test_read_names_the_bad_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n\n'
                  '{"prompt": "p", "chosen": "a"}\n', encoding="utf-8")
  with pytest.raises(ValueError, match=r"bad.jsonl:3: .*'rejected'"):
    list(schema.read_jsonl(path))


def test_write_refuses_an_invalid_record_and_leaves_no_target(tmp_path):
  path = tmp_path / "out.jsonl"
  with pytest.raises(ValueError, match="'chosen'"):
    schema.write_jsonl(path, [{"prompt": "p", "rejected": "b"}])
  assert not path.exists() and not (tmp_path / "out.jsonl.tmp").exists()
