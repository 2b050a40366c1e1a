// An approval waiting to be used (or to be decided) follows what happens next: when its status
// changes (the agent used it, it expired, someone else decided) the page reloads to show it.
(function () {
  "use strict";
  var badge = document.getElementById("approval-status");
  if (!badge) return;
  var shown = badge.textContent.trim();
  if (shown !== "approved" && shown !== "pending") return;
  var url = window.location.pathname + ".json";
  var tries = 0;
  function poll() {
    if (++tries > 300) return;  // ten minutes: then a reload is up to the reader
    fetch(url, {credentials: "same-origin", headers: {accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (doc) {
        var now = doc && doc.approval && doc.approval.status;
        if (now && now !== shown) {
          window.location.replace(window.location.pathname);  // drops ?done=: the page says what is true now
          return;
        }
        setTimeout(poll, 2000);
      }, function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 2000);
})();
