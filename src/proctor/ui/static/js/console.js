// Console-wide behaviour: theme toggle, "g then key" navigation, "/" to focus a filter.
(function () {
  "use strict";
  function setTheme(t) {
    document.documentElement.setAttribute("data-theme", t);
    try { localStorage.setItem("proctor-theme", t); } catch (e) { /* private mode */ }
  }
  function toggleTheme() {
    setTheme(document.documentElement.getAttribute("data-theme") === "dark" ? "light" : "dark");
  }
  document.addEventListener("DOMContentLoaded", function () {
    var b = document.getElementById("theme-toggle");
    if (b) b.addEventListener("click", toggleTheme);
  });
  function typing(e) {
    var t = e.target;
    return t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  }
  var GOTO = { o: "/", t: "/traces", s: "/sessions", a: "/agents", p: "/policies",
               r: "/approvals", l: "/alerts", k: "/killswitches", u: "/audit" };
  var pendingG = false;
  document.addEventListener("keydown", function (e) {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
    if (pendingG) {
      pendingG = false;
      if (GOTO[e.key]) { window.location.href = GOTO[e.key]; e.preventDefault(); }
      return;
    }
    if (e.key === "g") { pendingG = true; setTimeout(function () { pendingG = false; }, 1500); return; }
    if (e.key === "/") {
      var f = document.querySelector("[data-filter-focus]");
      if (f) { f.focus(); e.preventDefault(); }
    }
  });
  window.Proctor = window.Proctor || {};
  window.Proctor.toggleTheme = toggleTheme;
})();
