// The trace and session lists: filters that update the table in place (htmx), with the state in the URL.
// - empty filters (and defaults) are left out of the request, so the URL carries only what is set;
// - the quick time picks (15m, 1h, ...) fill "since" and filter at once;
// - after each swap, the fields the server could not read are marked, with its message beside them.
(function () {
  "use strict";
  function form() { return document.querySelector("form[data-list-filters]"); }

  document.addEventListener("htmx:configRequest", function (e) {
    var f = form();
    if (!f || e.detail.elt !== f) return;
    var params = e.detail.parameters;
    Object.keys(params).forEach(function (k) {
      var input = f.elements[k], dflt = input && input.getAttribute && input.getAttribute("data-default");
      if (params[k] === "" || params[k] === null || (dflt !== null && dflt !== undefined && params[k] === dflt)) delete params[k];
    });
  });

  document.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("a[data-since]");
    var f = form();
    if (!a || !f || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    f.elements.since.value = a.getAttribute("data-since");
    f.querySelectorAll("a[data-since]").forEach(function (x) { x.classList.toggle("on", x === a); });
    if (f.requestSubmit) f.requestSubmit(); else f.submit();
  });

  function markErrors() {
    var f = form(), results = document.getElementById("results");
    if (!f || !results) return;
    var errors = {};
    try { errors = JSON.parse(results.getAttribute("data-errors") || "{}"); } catch (err) { errors = {}; }
    f.querySelectorAll("[data-error-for]").forEach(function (span) {
      var name = span.getAttribute("data-error-for"), msg = errors[name];
      span.textContent = msg || "";
      span.hidden = !msg;
      var input = f.elements[name];
      if (input) { if (msg) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid"); }
    });
    var since = f.elements.since;
    f.querySelectorAll("a[data-since]").forEach(function (x) {
      x.classList.toggle("on", !!since && x.getAttribute("data-since") === since.value);
    });
  }
  document.addEventListener("htmx:afterSettle", markErrors);
  // back/forward: htmx puts back the page as it was first served, so the fields may show another
  // state than the URL and the list; set them from the URL
  document.addEventListener("htmx:historyRestore", function () {
    var f = form();
    if (!f) return;
    var q = new URLSearchParams(window.location.search);
    Array.prototype.forEach.call(f.elements, function (el) {
      if (!el.name || el.type === "submit") return;
      el.value = q.has(el.name) ? q.get(el.name) : (el.getAttribute("data-default") || "");
    });
    markErrors();
  });
})();
