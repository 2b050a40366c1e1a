// The diff page: choosing another agent reloads the form with that agent's versions.
(function () {
  "use strict";
  var agent = document.getElementById("diff-agent");
  if (!agent) return;
  agent.addEventListener("change", function () {
    var form = document.getElementById("diff-form");
    ["diff-a", "diff-b"].forEach(function (id) {
      var el = document.getElementById(id);
      if (el) el.disabled = true;  // the new agent's two newest versions, not the old choice
    });
    form.submit();
  });
})();
