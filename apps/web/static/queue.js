// The queue refreshes itself from /api/queue (same filters) every few seconds, and every "due" cell counts down;
// rows are built with textContent, never innerHTML: case fields come from the data.
(function () {
  "use strict";
  var table = document.querySelector('[data-testid="queue"]');
  var overdueLabel = table ? table.getAttribute("data-overdue-label") : "overdue";

  function countdown(cell) {
    var due = cell.getAttribute("data-due");
    if (!due) { cell.textContent = "-"; return; }
    var left = Math.round((Date.parse(due) - Date.now()) / 1000);
    var abs = Math.abs(left), d = Math.floor(abs / 86400), h = Math.floor((abs % 86400) / 3600);
    var m = Math.floor((abs % 3600) / 60), s = abs % 60;
    // the precision an agent acts on: days and hours when far off, seconds only in the last hour
    var text = d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m + "m " + s + "s";
    cell.textContent = left < 0 ? overdueLabel + " " + text : text;
    cell.classList.toggle("overdue", left < 0);
  }

  function tick() { document.querySelectorAll('[data-testid="due"]').forEach(countdown); }

  function cell(row, text) { var td = document.createElement("td"); td.textContent = text || ""; row.appendChild(td); return td; }

  function render(data) {
    var body = document.getElementById("queue-body");
    var rows = document.createDocumentFragment();
    data.cases.forEach(function (c) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-testid", "queue-row");
      tr.setAttribute("data-case-id", c.case_id);
      tr.setAttribute("data-priority", c.priority || "");
      tr.setAttribute("data-due", c.due_at || "");
      cell(tr, c.priority || "-");
      var due = cell(tr, "");
      due.setAttribute("data-testid", "due");
      due.setAttribute("data-due", c.due_at || "");
      var link = document.createElement("a");
      link.href = "/cases/" + encodeURIComponent(c.case_id);
      link.textContent = c.case_id;
      cell(tr, "").appendChild(link);
      [c.status, c.assignee, c.queue, c.channel, c.language, c.topic, c.intent].forEach(function (v) { cell(tr, v); });
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    document.getElementById("queue-total").textContent = data.total;
    tick();
  }

  function poll() {
    fetch("/api/queue" + window.location.search, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { render(data); } })
      .catch(function () {});
  }

  tick();
  setInterval(tick, 1000);
  if (table) { setInterval(poll, 5000); }
})();
