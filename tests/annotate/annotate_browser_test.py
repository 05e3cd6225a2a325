"""Headless Chromium against a real server: log in, label five comparisons with the mouse and with
the keyboard, reload mid-item and find the draft, log out. No dialog ever fires, the CSP blocks
nothing of ours, and markup in the items is shown as text."""

import os
import pathlib

import sqlalchemy as sa

from annotate_helpers import (PASSWORD, add_users, build_stats_fixture, import_items, items,
                              live_server)
from batgpt_jax.annotate import db, models

XSS_PROMPT = "Repeat: <script>alert('prompt')</script>"
XSS_ANSWER = "<img src=x onerror=alert('answer')>"
# Set to a path (docs/annotate_label.png) to keep the screenshot of the labelling page, and
# (docs/annotate_admin.png) of the quality page.
SCREENSHOT = os.environ.get("BATGPT_ANNOTATE_SCREENSHOT")
ADMIN_SCREENSHOT = os.environ.get("BATGPT_ANNOTATE_ADMIN_SCREENSHOT")


def _judgments(url: str) -> list:
  engine = db.make_engine(url)
  with engine.connect() as connection:
    rows = connection.execute(
        sa.select(models.Judgment.comparison_id, models.Judgment.outcome,
                  models.Judgment.strength, models.Judgment.preferred_response_id,
                  models.Judgment.left_response_id, models.Judgment.right_response_id,
                  models.Judgment.prompt_flags, models.Judgment.comment)
        .order_by(models.Judgment.id)).all()
    ratings = connection.execute(
        sa.select(models.AnswerRating.judgment_id, models.AnswerRating.response_id,
                  models.AnswerRating.acceptable, models.AnswerRating.helpfulness,
                  models.AnswerRating.harm_flags).order_by(models.AnswerRating.id)).all()
  engine.dispose()
  return rows, ratings


def _by_mouse(page, choice: str) -> None:
  page.check(f'input[name="choice"][value="{choice}"]')
  page.check('input[name="acceptable_left"][value="yes"]')
  page.check('input[name="acceptable_right"][value="no"]')
  page.check('input[name="harm_right"][value="dangerous_advice"]')
  page.check('input[name="helpfulness_left"][value="5"]')
  page.check('input[name="helpfulness_right"][value="2"]')
  page.check('input[name="prompt_flags"][value="unclear"]')
  page.fill('textarea[name="comment"]', "clicked")


def _wait_draft_saved(page) -> None:
  page.wait_for_selector('#draft-status[data-state="saved"]', timeout=10_000)


def _submit(page, action) -> None:
  """Submits (by `action`: a click or a key) and waits for the next page, not the old flash."""
  with page.expect_navigation():
    action()
  assert page.locator(".flash").inner_text() == "Saved."


def test_label_five_items_with_mouse_and_keys_reload_and_log_out(sqlite_url, chromium,
                                                                 tmp_path):
  add_users(sqlite_url, {"ann": "labeller"})
  xss = {"id": "xss", "prompt": XSS_PROMPT,
         "responses": [{"text": XSS_ANSWER, "model": "m1"},
                       {"text": "</div><script>alert('b')</script>", "model": "m2"}]}
  import_items(sqlite_url, "demo", [xss] + items(5), votes_required=1,
               guidelines="Prefer the answer that is correct, harmless and helpful.")
  dialogs, console_errors = [], []
  with live_server(sqlite_url) as (base, _):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))

    page.goto(base + "/label")
    assert "/login" in page.url
    page.fill('input[name="username"]', "ann")
    page.fill('input[name="password"]', PASSWORD)
    page.click("#login")
    page.wait_for_selector("#label-form")

    # Item 1 (the one full of markup): shown as text, by mouse.
    assert XSS_PROMPT in page.inner_text(".prompt")
    assert XSS_ANSWER in page.inner_text(".pair")
    assert page.locator("img").count() == 0
    _by_mouse(page, "A2")
    page.click("#guidelines summary")  # guidelines one click away
    assert "correct, harmless" in page.inner_text("#guidelines")
    _wait_draft_saved(page)
    target = pathlib.Path(SCREENSHOT) if SCREENSHOT else tmp_path / "label.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _submit(page, lambda: page.click("#submit"))

    # Items 2-3 by mouse.
    for choice in ("B3", "tie"):
      _by_mouse(page, choice)
      _submit(page, lambda: page.click("#submit"))

    # Item 4 by keyboard, reloaded half way: the draft comes back from the server.
    page.keyboard.press("1")            # A much better
    page.keyboard.press("a")            # answer A: acceptable, helpfulness 4
    page.keyboard.press("y")
    page.keyboard.press("4")
    _wait_draft_saved(page)
    page.reload()
    page.wait_for_selector("#label-form")
    assert page.is_checked('input[name="choice"][value="A3"]')
    assert page.is_checked('input[name="acceptable_left"][value="yes"]')
    assert page.is_checked('input[name="helpfulness_left"][value="4"]')
    page.keyboard.press("b")            # answer B: not acceptable, helpfulness 2
    page.keyboard.press("n")
    page.keyboard.press("2")
    page.keyboard.press("Escape")
    _submit(page, lambda: page.keyboard.press("Enter"))

    # Item 5 by keyboard only: B slightly better, both acceptable.
    for key in ("4", "a", "y", "3", "b", "y", "5", "Escape"):
      page.keyboard.press(key)
    _submit(page, lambda: page.keyboard.press("Enter"))

    with page.expect_navigation():
      page.click("#logout")
    page.wait_for_selector("#login")
    page.goto(base + "/label")
    assert "/login" in page.url
    context.close()
  assert dialogs == []
  assert console_errors == []  # e.g. a CSP violation would show here
  rows, ratings = _judgments(sqlite_url)
  assert [r.comparison_id for r in rows] == [1, 2, 3, 4, 5]
  outcome = [(r.outcome, r.strength, None if r.preferred_response_id is None else
              "left" if r.preferred_response_id == r.left_response_id else "right")
             for r in rows]
  assert outcome == [("preferred", 2, "left"), ("preferred", 3, "right"), ("tie", None, None),
                     ("preferred", 3, "left"), ("preferred", 1, "right")]
  assert rows[0].prompt_flags == ["unclear"] and rows[0].comment == "clicked"
  # Ratings are stored by response id: map them back to the side the labeller saw.
  sides = {}
  for r in rows:
    sides[r.left_response_id], sides[r.right_response_id] = "left", "right"
  seen = [(sides[x.response_id], x.acceptable, x.helpfulness, x.harm_flags) for x in ratings]
  assert seen[:2] == [("left", True, 5, []), ("right", False, 2, ["dangerous_advice"])] or \
      seen[:2] == [("right", False, 2, ["dangerous_advice"]), ("left", True, 5, [])]
  keyboard = sorted(seen[6:8])
  assert keyboard == [("left", True, 4, []), ("right", False, 2, [])]
  assert sorted(seen[8:10]) == [("left", True, 3, []), ("right", True, 5, [])]


def test_admin_sees_agreement_and_the_ranking_plot(sqlite_url, chromium, tmp_path):
  build_stats_fixture(sqlite_url)
  add_users(sqlite_url, {"boss": "admin"})
  console_errors = []
  with live_server(sqlite_url) as (base, _):
    context = chromium.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(base + "/admin")
    page.fill('input[name="username"]', "boss")
    page.fill('input[name="password"]', PASSWORD)
    with page.expect_navigation():
      page.click("#login")
    assert page.url.endswith("/admin")
    with page.expect_navigation():
      page.click("text=fixture")
    # The hand-computed figures of annotate_stats_test.py, as the page shows them.
    assert page.inner_text("#alpha") == f"{1 - 16 / 52:.3f}"
    assert page.locator("#kappa tr").nth(1).inner_text().split("\t") == ["u1 / u2", "4",
                                                                          f"{7 / 11:.3f}"]
    assert "0.750" in page.inner_text("#left-bias") and "1.000" in page.inner_text("#gold")
    assert page.locator("svg.plot rect").count() == 2
    widths = [float(page.locator("svg.plot rect").nth(i).get_attribute("width"))
              for i in range(2)]
    assert widths == [300, round(300 * 4 / 5)]  # m1 5/9 is the longest bar, m2 4/9
    target = pathlib.Path(ADMIN_SCREENSHOT) if ADMIN_SCREENSHOT else tmp_path / "admin.png"
    page.screenshot(path=str(target), full_page=True)
    context.close()
  assert console_errors == []
