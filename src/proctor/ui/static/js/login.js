/* Login links: /login#key=pk_... carries the key in the URL fragment, which the browser never
   sends to the server (nor to its logs). Read it, remove it from the address bar and the history
   at once, post it, and go on to the page asked for. A link pasted into a tab that already shows
   the login page changes only the fragment (no reload), hence the hashchange listener. */
(function () {
  "use strict";

  function show(message) {
    var box = document.getElementById("login-error");
    if (!box) return;
    box.textContent = message;
    box.hidden = false;
  }

  function loginFromFragment() {
    var match = /(?:^#|&)key=([^&]+)/.exec(location.hash);
    if (!match) return;
    // out of the address bar and history first, whatever follows
    history.replaceState(null, "", location.pathname + location.search);
    var key;
    try { key = decodeURIComponent(match[1]); } catch (e) { key = match[1]; }
    var section = document.getElementById("login");
    var next = section ? section.getAttribute("data-next") || "/" : "/";
    fetch("/login", {
      method: "POST",
      credentials: "same-origin",
      headers: {"content-type": "application/json", "accept": "application/json"},
      body: JSON.stringify({key: key, next: next})
    }).then(function (r) {
      return r.json().then(function (doc) { return {ok: r.ok, doc: doc}; });
    }).then(function (res) {
      if (res.ok) {
        location.replace(res.doc.next || "/");
      } else {
        show("The key in this login link was refused: " + (res.doc.detail || "unknown error"));
      }
    }).catch(function (err) {
      show("Could not log in: " + err);
    });
  }

  window.addEventListener("hashchange", loginFromFragment);
  loginFromFragment();
})();
