// Keyboard shortcuts and draft autosave for the labelling page. Plain DOM, no build step; the
// page works without it (mouse and submit button), this only adds keys and drafts.
(function () {
  "use strict";
  var form = document.getElementById("label-form");
  if (!form) { return; }
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var status = document.getElementById("draft-status");
  var overall = { "1": "A3", "2": "A2", "3": "A1", "4": "B1", "5": "B2", "6": "B3",
                  "t": "tie", "x": "both_bad" };
  var picked = null;  // "left" or "right" after a or b

  function fields() {
    var data = {};
    new FormData(form).forEach(function (value, name) {
      if (name === "csrf_token" || name === "action") { return; }
      if (name === "harm_left" || name === "harm_right" || name === "prompt_flags") {
        (data[name] = data[name] || []).push(value);
      } else {
        data[name] = value;
      }
    });
    ["harm_left", "harm_right", "prompt_flags"].forEach(function (n) { data[n] = data[n] || []; });
    return data;
  }

  var timer = null;
  function saveSoon() {
    clearTimeout(timer);
    status.textContent = "Saving draft…";
    status.dataset.state = "pending";  // until the newest change is stored, not an older one
    timer = setTimeout(save, 300);
  }
  function save() {
    fetch(form.dataset.draftUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(fields())
    }).then(function (r) {
      status.textContent = r.ok ? "Draft saved " + new Date().toLocaleTimeString()
                                : "Draft NOT saved (" + r.status + ")";
      status.dataset.state = r.ok ? "saved" : "error";
    }).catch(function () {
      status.textContent = "Draft NOT saved (offline?)";
      status.dataset.state = "error";
    });
  }
  form.addEventListener("change", saveSoon);
  form.addEventListener("input", saveSoon);
  // The submitted form carries everything; a draft saved after it would only be refused.
  form.addEventListener("submit", function () { clearTimeout(timer); });

  function setRadio(name, value) {
    var input = form.querySelector('input[name="' + name + '"][value="' + value + '"]');
    if (input) { input.checked = true; saveSoon(); }
  }
  function pick(side) {
    picked = side;
    ["left", "right"].forEach(function (s) {
      var answer = document.querySelector('.answer[data-side="' + s + '"]');
      answer.classList.toggle("picked", s === side);
    });
  }

  document.addEventListener("keydown", function (event) {
    var tag = event.target.tagName;
    var typing = tag === "TEXTAREA" || tag === "SELECT" ||
                 (tag === "INPUT" && event.target.type === "text");
    if (typing) { return; }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var key = event.key.toLowerCase();
    if (key === "enter") {
      event.preventDefault();
      document.getElementById("submit").click();
      return;
    }
    if (key === "escape") { pick(null); return; }
    if (key === "g") { var g = document.getElementById("guidelines"); g.open = !g.open; return; }
    if (key === "a") { pick("left"); return; }
    if (key === "b") { pick("right"); return; }
    if (picked && (key === "y" || key === "n")) {
      setRadio("acceptable_" + picked, key === "y" ? "yes" : "no");
      return;
    }
    if (picked && key.length === 1 && "12345".indexOf(key) >= 0) {
      setRadio("helpfulness_" + picked, key);
      return;
    }
    if (overall[key]) { setRadio("choice", overall[key]); }
  });
}());
