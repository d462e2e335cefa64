// Live updates: the server sends "changed" when sessions, jobs or machines
// changed; the page fetches its live part again and swaps it in. The rendered
// HTML comes from the server's html/template, escaped there.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!live || !window.EventSource) { return; }
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    var u = new URL(window.location.href);
    u.searchParams.set("partial", "1");
    fetch(u.toString(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401 || r.redirected) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          live.innerHTML = html;
          document.body.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  var es = new EventSource("/ui/events");
  es.addEventListener("changed", refresh);
  es.onopen = function () { if (status) { status.className = "live on"; } };
  es.onerror = function () { if (status) { status.className = "live off"; } };
})();
