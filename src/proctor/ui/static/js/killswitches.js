// Kill switches: scope presets fill the scope field; turning "global" on asks first.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var scope = document.getElementById("ks-scope");
    var form = document.getElementById("ks-form");
    if (!scope || !form) return;
    Array.prototype.forEach.call(document.querySelectorAll("button.preset"), function (b) {
      b.addEventListener("click", function () {
        scope.value = b.getAttribute("data-scope");
        scope.focus();
        // "agent:" and friends need a name: leave the caret at the end for typing it
        scope.setSelectionRange(scope.value.length, scope.value.length);
      });
    });
    form.addEventListener("submit", function (e) {
      var on = form.querySelector("input[name=on]:checked");
      if (scope.value.trim() === "global" && on && on.value === "1" &&
          !window.confirm("Turn the global kill switch on? Every call of every agent will be refused.")) {
        e.preventDefault();
      }
    });
  });
})();
