// Applied before first paint (loaded without defer): the saved theme, else the system's.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("proctor-theme"); } catch (e) { /* private mode */ }
  var dark = saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.setAttribute("data-theme", dark ? "dark" : "light");
})();
