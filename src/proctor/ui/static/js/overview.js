// The overview, live: an EventSource on /live/overview receives the snapshot (the JSON of
// /overview.json) whenever it changes, and the numbers and lists are swapped in place.
// Ages ("waiting 3 m") tick locally between snapshots. No library: the chart is a few SVG rects.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var initial = document.getElementById("overview-data");
  if (!initial) return;
  var snap = JSON.parse(initial.textContent);
  var receivedAt = Date.now(); // our clock when snap.now_ns was the server's

  // --- formatting (the same as the server's Jinja filters: duration, usd, int) -------------------
  function duration(ms) {
    if (ms === null || ms === undefined) return "–";
    if (ms < 1) return (ms * 1000).toFixed(0) + " µs";
    if (ms < 1000) return ms >= 10 ? ms.toFixed(0) + " ms" : ms.toFixed(1) + " ms";
    var s = ms / 1000;
    if (s < 60) return s.toFixed(2) + " s";
    var m = Math.floor(s / 60); s = Math.floor(s) % 60;
    if (m < 60) return m + " m " + (s < 10 ? "0" : "") + s + " s";
    var h = Math.floor(m / 60); m = m % 60;
    return h + " h " + (m < 10 ? "0" : "") + m + " m";
  }
  function usd(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "$0";
    if (Math.abs(v) < 0.01) return "$" + v.toFixed(5);
    return "$" + v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }
  function int(v) { return (v || 0).toLocaleString("en-US"); }
  var FORMAT = { int: int, usd: usd, duration: duration };

  function get(obj, path) {
    var parts = path.split(".");
    for (var i = 0; i < parts.length && obj !== undefined && obj !== null; i++) obj = obj[parts[i]];
    return obj;
  }
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]);
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }
  function serverNowMs() { return snap.now_ns / 1e6 + (Date.now() - receivedAt); }
  function ago(ns) { return el("span", { "data-ago-ns": String(ns) }, [duration(Math.max(0, serverNowMs() - ns / 1e6))]); }
  function sessionLink(id, label) { return el("a", { href: "/sessions/" + encodeURIComponent(id), class: "mono" }, [label || id]); }

  // --- the parts ---------------------------------------------------------------------------------
  function numbers() {
    document.querySelectorAll("[data-k]").forEach(function (node) {
      var v = get(snap, node.getAttribute("data-k"));
      if (v === undefined) return;
      var text = (FORMAT[node.getAttribute("data-f")] || String)(v);
      if (node.textContent !== text) {
        node.textContent = text;
        node.classList.remove("changed");
        void node.offsetWidth; // restart the highlight
        node.classList.add("changed");
      }
    });
    var t = document.getElementById("ov-now");
    if (t) { t.textContent = snap.now.replace("T", " ").replace(/\.\d+Z$/, "Z"); t.setAttribute("datetime", snap.now); }
  }

  function chart() {
    var fig = document.getElementById("cpm-chart");
    if (!fig) return;
    var c = snap.cost_per_minute, n = c.minutes, W = 600, H = 120, top = 14, bottom = 16;
    var max = c.max_usd > 0 ? c.max_usd : 1, bw = W / n;
    var svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + (H + top + bottom));
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "Cost per minute, last " + n + " minutes: " + usd(c.total_usd) + " in all, at most " +
      usd(c.max_usd) + " in one minute");
    function text(x, y, anchor, s) {
      var t = document.createElementNS(SVGNS, "text");
      t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor); t.setAttribute("class", "axis");
      t.textContent = s; svg.appendChild(t);
    }
    var base = document.createElementNS(SVGNS, "line");
    base.setAttribute("x1", 0); base.setAttribute("x2", W); base.setAttribute("y1", top + H); base.setAttribute("y2", top + H);
    base.setAttribute("class", "baseline");
    svg.appendChild(base);
    for (var i = 0; i < n; i++) {
      var v = c.cost_usd[i], h = v > 0 ? Math.max(1.5, (v / max) * H) : 0;
      var r = document.createElementNS(SVGNS, "rect");
      r.setAttribute("x", (i * bw + 1).toFixed(2)); r.setAttribute("width", Math.max(1, bw - 2).toFixed(2));
      r.setAttribute("y", (top + H - h).toFixed(2)); r.setAttribute("height", h.toFixed(2));
      r.setAttribute("class", "bar" + (i === n - 1 ? " now" : ""));
      var when = new Date((c.start_ns + i * c.step_ns) / 1e6);
      var title = document.createElementNS(SVGNS, "title");
      title.textContent = when.toISOString().slice(11, 16) + "Z · " + usd(v) + " · " + c.calls[i] + " model calls";
      r.appendChild(title);
      // a full-height hit area, so a minute with a tiny bar still shows its tooltip
      var hit = document.createElementNS(SVGNS, "rect");
      hit.setAttribute("x", (i * bw).toFixed(2)); hit.setAttribute("width", bw.toFixed(2));
      hit.setAttribute("y", top); hit.setAttribute("height", H); hit.setAttribute("class", "hit");
      hit.appendChild(title.cloneNode(true));
      svg.appendChild(r); svg.appendChild(hit);
    }
    text(2, 10, "start", "max " + usd(c.max_usd) + "/min");
    text(2, top + H + bottom - 2, "start", "−" + n + " min");
    text(W - 2, top + H + bottom - 2, "end", "now");
    var old = fig.querySelector("svg");
    if (old) fig.replaceChild(svg, old); else fig.appendChild(svg);
  }

  function effects() {
    var body = document.querySelector("#effects tbody");
    if (!body || !snap.decisions) return;
    var rows = snap.decisions.by_effect, top = 0;
    rows.forEach(function (e) { top = Math.max(top, e.count); });
    var minutes = snap.decisions.minutes;
    body.textContent = "";
    rows.forEach(function (e) {
      var link = el("a", { href: "/decisions?effect=" + encodeURIComponent(e.effect) + "&since=" + minutes + "m",
                           title: "These decisions in the decision log" },
                    [el("span", { class: "badge effect-" + e.effect }, [e.effect])]);
      var fill = el("span", { class: "fill eff-" + e.effect });
      fill.style.width = (e.count ? Math.max(0.5, 100 * e.count / top) : 0) + "%";
      body.appendChild(el("tr", { "data-effect": e.effect }, [
        el("th", { scope: "row" }, [link]), el("td", { class: "bar" }, [fill]), el("td", { class: "num" }, [int(e.count)]),
      ]));
    });
  }

  function list(bodyId, emptyId, items, row) {
    var body = document.getElementById(bodyId), empty = document.getElementById(emptyId);
    if (!body) return;
    body.textContent = "";
    items.forEach(function (it) { body.appendChild(row(it)); });
    if (empty) empty.hidden = items.length > 0;
  }

  function sessions() {
    var ls = snap.live_sessions;
    list("ls-body", "ls-empty", ls.items, function (s) {
      return el("tr", null, [
        el("td", null, [sessionLink(s.session_id)]), el("td", null, [s.agent || "–"]),
        el("td", { class: "num" }, [usd(s.cost_usd)]), el("td", { class: "num" }, [duration(s.duration_ms)]),
        el("td", { class: "num" }, [String(s.traces)]), el("td", { class: "num" }, [ago(s.seen_ns), " ago"]),
      ]);
    });
    var more = document.getElementById("ls-more"), n = ls.count - ls.items.length;
    if (more) { more.hidden = n <= 0; document.getElementById("ls-more-n").textContent = int(n); }
  }

  function approvals() {
    list("ap-list", "ap-empty", snap.approvals.oldest, function (a) {
      var meta = [a.agent || ""];
      if (a.session_id) { meta.push(" · "); meta.push(el("a", { href: "/sessions/" + encodeURIComponent(a.session_id) }, [a.session_id.slice(0, 16)])); }
      return el("li", null, [
        el("a", { href: "/approvals/" + encodeURIComponent(a.id) }, [el("code", null, [a.tool])]), " ",
        el("span", { class: "muted" }, meta), " ",
        el("span", { class: "when" }, ["waiting ", ago(a.requested_ns)]),
        a.message ? el("div", { class: "muted msg" }, [a.message]) : null,
      ]);
    });
  }

  function alerts() {
    list("al-list", "al-empty", snap.alerts.items, function (a) {
      return el("li", null, [
        el("span", { class: "badge sev-" + a.severity }, [a.severity]), " ",
        el("a", { href: "/alerts/" + encodeURIComponent(a.id) }, [a.summary]), " ",
        el("span", { class: "muted" }, [a.rule_id]), " ",
        el("span", { class: "when" }, ["for ", ago(a.since_ns)]),
      ]);
    });
  }

  function tick() {
    var now = serverNowMs();
    document.querySelectorAll("[data-ago-ns]").forEach(function (node) {
      node.textContent = duration(Math.max(0, now - Number(node.getAttribute("data-ago-ns")) / 1e6));
    });
  }

  function apply(next) {
    snap = next;
    receivedAt = Date.now();
    numbers(); chart(); effects(); sessions(); approvals(); alerts();
    document.dispatchEvent(new CustomEvent("proctor:overview", { detail: next }));
  }

  // --- the stream --------------------------------------------------------------------------------
  var badge = document.getElementById("live");
  function state(s, text) {
    if (!badge) return;
    badge.setAttribute("data-live-state", s);
    badge.querySelector(".live-text").textContent = text;
  }
  var source = null, backoff = 1000, retryTimer = null;
  function connect() {
    if (!window.EventSource) { state("off", "not live (no EventSource)"); return; }
    state("connecting", "connecting…");
    source = new EventSource("/live/overview");
    source.onopen = function () { backoff = 1000; state("live", "live"); };
    source.onmessage = function (e) {
      state("live", "live");
      try { apply(JSON.parse(e.data)); } catch (err) { console.warn("overview: bad snapshot", err); }
    };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        // refused (503, or an error page): the browser will not retry by itself, so we do
        source = null;
        state("reconnecting", "reconnecting…");
        clearTimeout(retryTimer);
        // EventSource hides the status: ask the page's twin whether we are still logged in
        fetch("/overview.json", {credentials: "same-origin", headers: {accept: "application/json"}})
          .then(function (r) {
            if (r.status === 401) {  // the key was revoked or the login expired: say so, do not spin
              window.location.href = "/login?next=" + encodeURIComponent("/");
              return;
            }
            retryTimer = setTimeout(connect, backoff);
            backoff = Math.min(backoff * 2, 30000);
          }, function () {  // the server is down: keep trying, more slowly
            retryTimer = setTimeout(connect, backoff);
            backoff = Math.min(backoff * 2, 30000);
          });
      } else {
        state("reconnecting", "reconnecting…"); // the browser retries after the server's retry hint
      }
    };
  }
  window.addEventListener("pagehide", function () { if (source) source.close(); });

  chart();
  setInterval(tick, 1000);
  connect();
  window.Proctor = window.Proctor || {};
  window.Proctor.overview = { snapshot: function () { return snap; } };
})();
