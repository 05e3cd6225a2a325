"""Import and export through the command line: idempotent import, byte-identical exports in the
preference schema, merged votes with the numbers worked out by hand."""

import json
import re

import pytest

from annotate_helpers import add_users, csrf_of, login
from batgpt_jax.annotate import command, exchange

RECORDS = [
    {"id": "q1", "prompt": "Capital of France?",
     "responses": [{"text": "Paris.", "model": "ckpt-a"}, {"text": "Lyon.", "model": "ckpt-b"}],
     "ai_labels": [{"labeller": "judge", "chosen": 0, "rejected": 1, "strength": 3}]},
    {"id": "q2", "messages": [{"role": "user", "content": "Hi"},
                              {"role": "assistant", "content": "Hello!"},
                              {"role": "user", "content": "Tell a joke"}],
     "responses": [{"text": "Knock knock.", "model": "ckpt-a"},
                   {"text": "No.", "model": "ckpt-b"}]},
    {"id": "q3", "prompt": "Three answers",
     "responses": [{"text": "one", "model": "a"}, {"text": "two", "model": "b"},
                   {"text": "three", "model": "c"}]},
]


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
  return str(path)


def _answer(client, project_id, choice_by_item: dict):
  """Answers items as they come; `choice_by_item` maps the answer shown as A to a choice."""
  while True:
    page = client.get(f"/label/{project_id}").text
    if "No item needs you" in page:
      return
    action = re.search(r'action="(/label/\d+/submit/\d+)"', page).group(1)
    left = re.search(r'id="answer-A".*?answer-text">(.*?)</div>', page, re.S).group(1)
    right = re.search(r'id="answer-B".*?answer-text">(.*?)</div>', page, re.S).group(1)
    choice = choice_by_item.get(left, "tie")
    form = {"csrf_token": csrf_of(page), "choice": choice, "helpfulness_left": "4",
            "helpfulness_right": "3", "action": "submit"}
    for side, text in (("left", left), ("right", right)):  # Lyon is wrong and rated so
      form[f"acceptable_{side}"] = "no" if text == "Lyon." else "yes"
      form[f"harm_{side}"] = ["dangerous_advice"] if text == "Lyon." else []
    assert client.post(action, data=form).status_code == 303


def test_import_twice_adds_nothing_and_names_bad_lines(sqlite_url, tmp_path, capsys):
  source = _write(tmp_path / "in.jsonl", RECORDS)
  assert command.main(["import", "--db", sqlite_url, "--project", "p", "--input", source,
                       "--votes", "2"]) == 0
  first = json.loads(capsys.readouterr().out)
  assert first == {"project": "p", "prompts": 3, "responses": 7, "comparisons": 5,
                   "ai_labels": 1}
  command.main(["import", "--db", sqlite_url, "--project", "p", "--input", source])
  assert json.loads(capsys.readouterr().out) == {"project": "p", "skipped_existing": 3}
  bad = _write(tmp_path / "bad.jsonl", [RECORDS[0] | {"id": "new"},
                                        {"prompt": "x", "responses": [{"text": "only one",
                                                                       "model": "m"}]}])
  with pytest.raises(SystemExit, match=r"line 2: 'responses' should list two or more"):
    command.main(["import", "--db", sqlite_url, "--project", "p", "--input", bad])
  command.main(["import", "--db", sqlite_url, "--project", "p", "--input", source])
  assert json.loads(capsys.readouterr().out)["skipped_existing"] == 3  # line 1 rolled back too


def test_export_twice_is_identical_and_follows_the_schema(sqlite_url, tmp_path, make_app):
  source = _write(tmp_path / "in.jsonl", RECORDS[:2])
  command.main(["import", "--db", sqlite_url, "--project", "p", "--input", source,
                "--votes", "2"])
  add_users(sqlite_url, {"ann": "labeller", "bob": "labeller"})
  app = make_app(sqlite_url)
  ann, bob = app.test_client(), app.test_client()
  login(ann, "ann")
  login(bob, "bob")
  # q1: ann "A much better" whichever side Paris is on -> Paris preferred with strength 3;
  # bob says tie. q2: both prefer the joke by 1 ("slightly").
  _answer(ann, 1, {"Paris.": "A3", "Lyon.": "B3", "Knock knock.": "A1", "No.": "B1"})
  _answer(bob, 1, {"Knock knock.": "A1", "No.": "B1"})
  out1, out2, hh = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "hh.jsonl"
  for out in (out1, out2):
    assert command.main(["export", "--db", sqlite_url, "--project", "p", "--output", str(out),
                         "--include-ai"]) == 0
  assert out1.read_bytes() == out2.read_bytes()
  records = list(exchange.preference_schema().read_jsonl(out1))
  assert records[0] == {
      # Votes: Paris (1) + tie (0.5) over 2 -> p_chosen 0.75; margin (3 + 0) / 2 = 1.5.
      "prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "tie": False,
      "p_chosen": 0.75, "margin": 1.5, "source": "human", "weight": 2.0,
      # Both rated Lyon unacceptable, with a harm flag.
      "flags": ["rejected_harm:dangerous_advice", "rejected_unacceptable"]}
  assert records[1] == {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.",
                        "tie": False, "p_chosen": 1.0, "margin": 3.0, "source": "ai",
                        "weight": 1.0, "flags": ["labeller:judge"]}
  assert records[2]["messages"][-1] == {"role": "user", "content": "Tell a joke"}
  assert (records[2]["chosen"], records[2]["p_chosen"], records[2]["margin"],
          records[2]["flags"]) == ("Knock knock.", 1.0, 1.0, [])
  assert len(records) == 3
  command.main(["export", "--db", sqlite_url, "--project", "p", "--output", str(hh),
                "--style", "hh"])
  lines = [json.loads(l) for l in hh.read_text(encoding="utf-8").splitlines()]
  assert lines[0] == {"chosen": "\n\nHuman: Capital of France?\n\nAssistant: Paris.",
                      "rejected": "\n\nHuman: Capital of France?\n\nAssistant: Lyon."}
  assert lines[1]["chosen"] == ("\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell a joke"
                                "\n\nAssistant: Knock knock.")


def test_stats_command_prints_the_figures(sqlite_url, tmp_path, capsys):
  command.main(["import", "--db", sqlite_url, "--project", "p", "--input",
                _write(tmp_path / "in.jsonl", RECORDS)])
  capsys.readouterr()
  assert command.main(["stats", "--db", sqlite_url, "--project", "p"]) == 0
  figures = json.loads(capsys.readouterr().out)
  assert figures["project"] == "p" and figures["judgments"] == 0
  with pytest.raises(SystemExit, match=r"no project 'nope'; the database has \['p'\]"):
    command.main(["stats", "--db", sqlite_url, "--project", "nope"])


def test_split_votes_export_as_a_tie_without_margin(sqlite_url, tmp_path, make_app):
  command.main(["import", "--db", sqlite_url, "--project", "p", "--input",
                _write(tmp_path / "in.jsonl", RECORDS[:1]), "--votes", "2"])
  add_users(sqlite_url, {"ann": "labeller", "bob": "labeller"})
  app = make_app(sqlite_url)
  ann, bob = app.test_client(), app.test_client()
  login(ann, "ann")
  login(bob, "bob")
  _answer(ann, 1, {"Paris.": "A3", "Lyon.": "B3"})   # Paris, much better
  _answer(bob, 1, {"Paris.": "B1", "Lyon.": "A1"})   # Lyon, slightly better
  out = tmp_path / "out.jsonl"
  command.main(["export", "--db", sqlite_url, "--project", "p", "--output", str(out)])
  (record,) = exchange.preference_schema().read_jsonl(out)
  # One vote each way: p = 1/2, a tie; chosen/rejected keep the canonical (import) order.
  assert (record["chosen"], record["rejected"], record["tie"], record["p_chosen"],
          record["margin"], record["weight"]) == ("Paris.", "Lyon.", True, 0.5, 0.0, 2.0)
