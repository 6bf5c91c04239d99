// Live updates: while <main data-live> says the page can still change, fetch it again every two
// seconds and swap <main>; the static page works without this script.
(function () {
  var dot = document.getElementById("live");
  function tick() {
    var main = document.querySelector("main");
    if (!main || !main.hasAttribute("data-live")) {
      if (dot) { dot.className = "live-dot"; dot.textContent = ""; }
      return;
    }
    if (dot) { dot.className = "live-dot on"; }
    fetch(location.pathname + location.search, { headers: { "x-explorer-live": "1" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html) {
          var next = new DOMParser().parseFromString(html, "text/html").querySelector("main");
          if (next) { main.replaceWith(next); }
          var done = next && !next.hasAttribute("data-live");
          if (dot) {
            dot.className = done ? "live-dot" : "live-dot on";
            dot.textContent = (done ? "final · " : "live · ") + new Date().toLocaleTimeString();
          }
        }
      })
      .catch(function () { if (dot) { dot.textContent = "reconnecting…"; } })
      .finally(function () { setTimeout(tick, 2000); });
  }
  setTimeout(tick, 2000);
})();
