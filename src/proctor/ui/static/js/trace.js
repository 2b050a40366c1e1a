// The trace view: a tree beside a waterfall, virtualized; the span inspector; decisions, causal
// links and errors; a graph of the agents, tools and models; keyboard navigation.
//
// The page is a shell. The trace arrives as columns (/traces/{id}.json, preloaded by the page):
// one array per field, span i in depth-first order. Rows are drawn for what is on screen only:
// a pool of row elements is refilled on scroll, every row ROW_H pixels high, inside a spacer as
// tall as all visible rows. Collapsing or filtering rebuilds `visible` (the span indexes shown,
// in order) in O(spans); nothing else depends on the trace's size.
(function () {
  "use strict";
  var ROW_H = 24, OVERSCAN = 10, INDENT = 14, MAX_INDENT = 40;
  var view = document.getElementById("trace-view");
  if (!view) return;
  var traceId = view.getAttribute("data-trace-id");
  var $ = function (id) { return document.getElementById(id); };
  var scroller = $("trace-scroll"), spacer = $("trace-spacer"), rowsEl = $("trace-rows");
  var inspector = $("inspector"), inspectorBody = $("inspector-body"), body = $("trace-body");
  var search = $("trace-search"), searchCount = $("trace-search-count"), chip = $("trace-filter-chip");
  var help = $("trace-help");

  var EFFECT_LABEL = { terminate_session: "⊘ stop", deny: "✕ deny", require_approval: "‖ hold",
                       redact: "✎ redact", warn: "⚠ warn", allow: "allow" };
  var EFFECT_RANK = { allow: 0, warn: 1, redact: 2, require_approval: 3, deny: 4, terminate_session: 5 };

  // --- state -------------------------------------------------------------------------------------
  var D = null, C = null, S = null, n = 0;
  var parent, endIx, collapsed, kindStr;        // tree
  var visible = new Int32Array(0), visCount = 0;  // what is shown, in order
  var keep = null, match = null;                  // the active filter (null: none)
  var filterLabel = "";
  var decisionsBySpan = {}, linksBySpan = {}, interesting = [];
  var sel = -1, linked = {}, inspectorOpen = false;
  var pool = [], version = 0, rafPending = false;
  var fragmentCache = {}, fragmentOrder = [], inflight = null;
  var agentNodeOf = null, graphBuilt = false, activeNode = -1;
  var zoom = null;  // {from, to, i}: the waterfall shows this window (µs from the trace's start)

  // --- formatting --------------------------------------------------------------------------------
  function fmtDur(us) {
    if (us < 1000) return Math.round(us) + " µs";
    var ms = us / 1000;
    if (ms < 10) return ms.toFixed(1) + " ms";
    if (ms < 1000) return Math.round(ms) + " ms";
    var s = ms / 1000;
    if (s < 60) return s.toFixed(2) + " s";
    var m = Math.floor(s / 60), r = Math.floor(s % 60);
    if (m < 60) return m + " m " + (r < 10 ? "0" : "") + r + " s";
    var h = Math.floor(m / 60), mm = m % 60;
    return h + " h " + (mm < 10 ? "0" : "") + mm + " m";
  }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function str(col, i) { var k = C[col][i]; return k >= 0 ? S[k] : ""; }
  function kindClass(k) {
    return k === "llm" || k === "embedding" ? "llm" : k === "tool" || k === "retrieval" ? "tool"
      : k === "agent" || k === "handoff" ? "agent" : k === "guardrail" ? "policy" : "other";
  }

  // --- loading -----------------------------------------------------------------------------------
  function load() {
    // same URL, mode and credentials as the page's <link rel=preload>: the browser hands over that response
    fetch(view.getAttribute("data-url"), { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(init)
      .catch(function (err) {
        $("trace-loading").textContent = "Could not load the trace: " + err.message;
        scroller.setAttribute("aria-busy", "false");
      });
  }

  function init(doc) {
    D = doc; C = doc.columns; S = doc.strings; n = doc.span_count;
    parent = C.parent;
    endIx = new Int32Array(n);
    var i, p;
    for (i = 0; i < n; i++) endIx[i] = i + 1;
    for (i = n - 1; i >= 0; i--) { p = parent[i]; if (p >= 0 && endIx[i] > endIx[p]) endIx[p] = endIx[i]; }
    collapsed = new Uint8Array(n);
    kindStr = new Array(S.length);
    for (i = 0; i < S.length; i++) kindStr[i] = kindClass(S[i]);
    doc.decisions.forEach(function (d) { (decisionsBySpan[d.span] = decisionsBySpan[d.span] || []).push(d); });
    doc.links.forEach(function (ln) {
      (linksBySpan[ln.from] = linksBySpan[ln.from] || []).push({ type: ln.type, other: ln.to, dir: "out", ln: ln });
      if (ln.to >= 0) (linksBySpan[ln.to] = linksBySpan[ln.to] || []).push({ type: ln.type, other: ln.from, dir: "in", ln: ln });
    });
    var flags = new Uint8Array(n);
    for (i = 0; i < n; i++) if (C.err[i]) flags[i] = 1;
    Object.keys(decisionsBySpan).forEach(function (k) { flags[+k] = 1; });
    for (i = 0; i < n; i++) if (flags[i]) interesting.push(i);

    $("trace-loading").remove();
    scroller.setAttribute("aria-busy", "false");
    drawDecisionSummary();  // before measuring: it changes the header's height
    computeVisible();
    drawAxis();
    sizeViewport();
    render();
    // read by benchmarks/console.py and the tests
    var stamps = window.__proctorTrace = { firstRowsAt: performance.now(), spans: n, lastId: n ? C.id[n - 1] : null };
    requestAnimationFrame(function () { setTimeout(function () { stamps.firstFrameAt = performance.now(); }, 0); });
    if (document.readyState !== "complete") {  // this script does not wait for the stylesheets: measure again
      window.addEventListener("load", function () { sizeViewport(); render(); });
    }
    updateJumpCount();
    view.classList.add("ready");

    var wanted = view.getAttribute("data-selected") || new URLSearchParams(location.search).get("span");
    if (wanted) {
      var at = C.id.indexOf(wanted);
      if (at < 0) for (i = 0; i < n; i++) if (C.id[i].indexOf(wanted) === 0) { at = i; break; }
      if (at >= 0) select(at, { center: true, open: true });
    }
  }

  // --- which rows are shown ----------------------------------------------------------------------
  function computeVisible() {
    var out = new Int32Array(n), k = 0, i = 0;
    while (i < n) {
      if (keep && !keep[i]) { i = endIx[i]; continue; }  // nothing under it matches either
      out[k++] = i;
      i = collapsed[i] ? endIx[i] : i + 1;
    }
    visible = out; visCount = k;
    spacer.style.height = (k * ROW_H) + "px";
    version++;
  }
  function vpos(i) {  // position of span i among the visible rows, or -1
    var lo = 0, hi = visCount - 1;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1, v = visible[mid];
      if (v === i) return mid;
      if (v < i) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
  }
  function hasKids(i) { return endIx[i] > i + 1; }
  function reveal(i) {  // expand every collapsed ancestor; drop a filter that hides i
    var changed = false;
    if (keep && !keep[i]) { clearFilter(true); changed = true; }
    for (var p = parent[i]; p >= 0; p = parent[p]) if (collapsed[p]) { collapsed[p] = 0; changed = true; }
    if (changed) computeVisible();
  }

  // --- drawing -----------------------------------------------------------------------------------
  function makeRow() {
    var el = document.createElement("div");
    el.className = "trow";
    el.setAttribute("role", "treeitem");
    el.innerHTML = '<div class="tcell-name"><span class="twisty" aria-hidden="true"></span>' +
      '<span class="kdot" aria-hidden="true"></span><span class="tname"></span><span class="tmarks"></span></div>' +
      '<div class="tcell-bar"><div class="tbar"></div><span class="tdur"></span></div>';
    var c = el.firstChild;
    return { el: el, name: c, twisty: c.childNodes[0], kdot: c.childNodes[1], label: c.childNodes[2],
             marks: c.childNodes[3], bar: el.lastChild.firstChild, dur: el.lastChild.lastChild, i: -1, v: -1 };
  }

  function markHtml(i) {
    var ds = decisionsBySpan[i], html = "";
    if (ds) {
      var seen = {};
      ds.slice().sort(function (a, b) { return (EFFECT_RANK[b.effect] || 0) - (EFFECT_RANK[a.effect] || 0); })
        .forEach(function (d) {
          var key = d.effect + (d.enforced ? "" : "-shadow");
          if (seen[key]) return;
          seen[key] = 1;
          html += '<span class="mk mk-' + esc(d.effect) + (d.enforced ? "" : " mk-shadow") + '" title="' +
            esc((d.enforced ? "" : "shadow: ") + d.effect + " by " + (d.rule_id || "default") + " — " + (d.reason || "")) +
            '">' + esc(EFFECT_LABEL[d.effect] || d.effect) + "</span>";
        });
    }
    if (linked[i]) html += '<span class="mk mk-link" title="causally linked to the selected span">⇄ ' + esc(linked[i]) + "</span>";
    return html;
  }

  function fill(r, i) {
    var total = D.duration_us || 1;
    r.i = i; r.v = version;
    var kind = C.kind[i] >= 0 ? S[C.kind[i]] : "other", kc = C.kind[i] >= 0 ? kindStr[C.kind[i]] : "other";
    var cls = "trow k-" + kc;
    if (C.err[i]) cls += " err";
    if (i === sel) cls += " sel";
    if (linked[i]) cls += " linked";
    if (decisionsBySpan[i]) cls += " has-decision";
    if (match) cls += match[i] ? " match" : " dim";
    r.el.className = cls;
    r.el.id = "span-" + C.id[i];
    r.el.setAttribute("data-i", i);
    r.el.setAttribute("data-span-id", C.id[i]);
    r.el.setAttribute("aria-level", C.depth[i] + 1);
    r.el.setAttribute("aria-selected", i === sel ? "true" : "false");
    var kids = hasKids(i);
    if (kids) r.el.setAttribute("aria-expanded", collapsed[i] ? "false" : "true");
    else r.el.removeAttribute("aria-expanded");
    var d = C.depth[i];
    r.name.style.paddingLeft = (4 + Math.min(d, MAX_INDENT) * INDENT) + "px";
    r.twisty.textContent = kids ? (collapsed[i] ? "▸" : "▾") : "";
    r.twisty.className = kids ? "twisty" : "twisty leaf";
    r.kdot.title = kind;
    var name = str("name", i);
    r.label.textContent = name;
    r.label.title = name + " · " + kind + " · " + fmtDur(C.dur[i]) + (C.err[i] ? " · error: " + (D.errors[i] || "") : "") +
      (d > MAX_INDENT ? " · depth " + d : "");
    r.marks.innerHTML = (decisionsBySpan[i] || linked[i]) ? markHtml(i) : "";
    var from = zoom ? zoom.from : 0, span = zoom ? zoom.to - zoom.from : total;
    var s0 = C.start[i] - from, s1 = s0 + C.dur[i];
    if (s1 < 0 || s0 > span) {  // outside the zoomed window
      r.bar.style.visibility = "hidden"; r.dur.textContent = ""; return;
    }
    r.bar.style.visibility = "";
    var left = Math.max(0, s0) / span * 100, width = Math.max((Math.min(s1, span) - Math.max(0, s0)) / span * 100, 0.1);
    if (left > 99.9) left = 99.9;
    r.bar.style.left = left + "%";
    r.bar.style.width = Math.min(width, 100 - left) + "%";
    r.dur.textContent = fmtDur(C.dur[i]);
    if (left + width > 82) { r.dur.style.left = ""; r.dur.style.right = (100 - left) + "%"; r.dur.className = "tdur before"; }
    else { r.dur.style.right = ""; r.dur.style.left = (left + width) + "%"; r.dur.className = "tdur"; }
  }

  function render() {
    rafPending = false;
    if (!D) return;
    var top = scroller.scrollTop, h = scroller.clientHeight || 600;
    var first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    var last = Math.min(visCount, Math.ceil((top + h) / ROW_H) + OVERSCAN);
    var need = Math.max(0, last - first);
    rowsEl.style.transform = "translateY(" + (first * ROW_H) + "px)";
    while (pool.length < need) { var r = makeRow(); pool.push(r); rowsEl.appendChild(r.el); }
    for (var k = 0; k < pool.length; k++) {
      var row = pool[k];
      if (k < need) {
        var i = visible[first + k];
        if (row.i !== i || row.v !== version) fill(row, i);
        if (row.el.hidden) row.el.hidden = false;
      } else if (!row.el.hidden) {
        row.el.hidden = true; row.i = -1;
      }
    }
    if (sel >= 0 && vpos(sel) >= 0 && document.getElementById("span-" + C.id[sel])) {
      scroller.setAttribute("aria-activedescendant", "span-" + C.id[sel]);
    } else {
      scroller.removeAttribute("aria-activedescendant");
    }
  }
  function schedule() { if (!rafPending) { rafPending = true; requestAnimationFrame(render); } }
  function redraw() { version++; render(); }

  function drawAxis() {
    var axis = $("trace-axis"), from = zoom ? zoom.from : 0, span = zoom ? zoom.to - zoom.from : D.duration_us, html = "";
    for (var q = 0; q <= 3; q++) {
      var at = from + span * q / 3;
      html += '<span class="tick' + (q === 3 ? " last" : "") + '" style="left:' + (q * 100 / 3) + '%">' +
        (at ? (zoom ? "+" : "") + fmtDur(at) : "0") + "</span>";
    }
    axis.innerHTML = html;
    var btn = $("zoom-toggle");
    btn.textContent = zoom ? "Unzoom" : "Zoom to span";
    btn.setAttribute("aria-pressed", zoom ? "true" : "false");
    btn.title = zoom ? "Show the whole trace on the timeline (z)" : "Fit the timeline to the selected span (z)";
  }
  function toggleZoom() {
    if (zoom || sel < 0 || !C.dur[sel]) zoom = null;
    else zoom = { from: C.start[sel], to: C.start[sel] + C.dur[sel], i: sel };
    drawAxis();
    redraw();
  }

  function sizeViewport() {
    var top = scroller.getBoundingClientRect().top;
    var h = Math.max(280, window.innerHeight - Math.max(top, 0) - 16);
    scroller.style.height = h + "px";
    inspector.style.maxHeight = (h + 28) + "px";
    inspector.style.height = (h + 28) + "px";
  }

  function drawDecisionSummary() {
    var box = $("trace-decisions"), ds = D.decisions, errs = 0;
    for (var i = 0; i < n; i++) errs += C.err[i];
    var html = '<span class="muted">Policy: ' + D.decision_count + " decision" + (D.decision_count === 1 ? "" : "s") +
      (ds.length ? ", " + ds.length + " not a plain allow" : ", all allowed") + " · " + errs + " failed span" + (errs === 1 ? "" : "s") + "</span>";
    if (ds.length) {
      var shown = ds.slice().sort(function (a, b) {
        return (b.enforced - a.enforced) || (EFFECT_RANK[b.effect] || 0) - (EFFECT_RANK[a.effect] || 0) || a.span - b.span;
      }).slice(0, 3);
      html += '<ul class="decision-list">';
      shown.forEach(function (d) {
        html += '<li><button type="button" class="linkish" data-jump="' + d.span + '">' +
          '<span class="mk mk-' + esc(d.effect) + (d.enforced ? "" : " mk-shadow") + '">' + esc(EFFECT_LABEL[d.effect] || d.effect) + "</span> " +
          '<span class="mono">' + esc(d.rule_id || "default") + "</span> — " + esc(d.reason || "") +
          ' <span class="muted">on ' + esc(str("name", d.span)) + (d.trace_level ? " (the whole trace)" : "") + "</span></button></li>";
      });
      html += "</ul>";
      if (ds.length > shown.length) html += '<span class="muted">and ' + (ds.length - shown.length) + " more: step through them with n.</span>";
    }
    box.innerHTML = html;
  }

  // --- selection and the inspector ---------------------------------------------------------------
  function select(i, opts) {
    opts = opts || {};
    if (typeof i !== "number" || !(i >= 0 && i < n)) return;
    reveal(i);
    sel = i;
    linked = {};
    (linksBySpan[i] || []).forEach(function (l) { if (l.other >= 0) linked[l.other] = linkWord(l); });
    scrollToRow(i, opts.center);
    redraw();
    var params = new URLSearchParams(location.search);
    params.set("span", C.id[i]);
    history.replaceState(null, "", location.pathname + "?" + params.toString());
    if (opts.open || inspectorOpen) openInspector(i);
    updateJumpCount();
  }
  function linkWord(l) {
    if (l.type === "tool_call") return l.dir === "out" ? "ran the call" : "asked for it";
    if (l.type === "spawned_by") return l.dir === "out" ? "spawned it" : "sub-agent";
    return "linked";
  }
  function scrollToRow(i, center) {
    var p = vpos(i);
    if (p < 0) return;
    var top = p * ROW_H, h = scroller.clientHeight;
    if (center) scroller.scrollTop = Math.max(0, top - h / 2 + ROW_H / 2);
    else if (top < scroller.scrollTop) scroller.scrollTop = top;
    else if (top + ROW_H > scroller.scrollTop + h) scroller.scrollTop = top + ROW_H - h;
    render();
  }

  function openInspector(i) {
    inspectorOpen = true;
    inspector.hidden = false;
    body.classList.add("with-inspector");
    var id = C.id[i];
    if (inspectorBody.getAttribute("data-span-id") === id && !inspectorBody.querySelector(".loading")) return;
    inspectorBody.setAttribute("data-span-id", id);
    if (fragmentCache[id]) { showFragment(i, fragmentCache[id]); return; }
    // what the page already knows, at once; the rest when the fragment arrives
    inspectorBody.innerHTML = '<article class="span-detail loading"><header><h2 class="span-name"><span class="kind-chip kind-' +
      esc(str("kind", i)) + '">' + esc(str("kind", i)) + "</span> " + esc(str("name", i)) + "</h2></header>" +
      '<p class="muted">' + fmtDur(C.dur[i]) + " · loading…</p></article>";
    if (inflight) inflight.abort();
    var ctl = typeof AbortController !== "undefined" ? new AbortController() : null;
    inflight = ctl;
    fetch("/traces/" + traceId + "/spans/" + id, { headers: { "X-Proctor-Fragment": "1" }, credentials: "same-origin",
                                                  signal: ctl ? ctl.signal : undefined })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        remember(id, html);
        if (inspectorBody.getAttribute("data-span-id") === id) showFragment(i, html);
      })
      .catch(function (err) {
        if (err.name === "AbortError") return;
        if (inspectorBody.getAttribute("data-span-id") === id) {
          inspectorBody.innerHTML = '<p class="flash err">Could not load the span: ' + esc(err.message) + "</p>";
        }
      });
  }
  function remember(id, html) {
    fragmentCache[id] = html;
    fragmentOrder.push(id);
    if (fragmentOrder.length > 60) delete fragmentCache[fragmentOrder.shift()];
  }
  function showFragment(i, html) {
    inspectorBody.innerHTML = html;
    var stamps = window.__proctorTrace;
    if (stamps) {  // when the inspector was filled, and the first frame that shows it
      stamps.inspectorAt = performance.now();
      stamps.inspectorFrameAt = 0;
      requestAnimationFrame(function () { setTimeout(function () { stamps.inspectorFrameAt = performance.now(); }, 0); });
    }
    var box = inspectorBody.querySelector("#insp-links");
    if (box) box.innerHTML = linksHtml(i);
  }
  function linksHtml(i) {
    var ls = linksBySpan[i] || [];
    if (!ls.length) return "";
    var LIMIT = 50, html = '<h3>Causal links <span class="muted">(' + ls.length + ")</span></h3>" + '<ul class="causal-links">';
    ls.slice(0, LIMIT).forEach(function (l) {
      var what;
      if (l.type === "tool_call") what = l.dir === "out" ? "Asked for tool call " : "Requested by ";
      else if (l.type === "spawned_by") what = l.dir === "out" ? "Spawned by " : "Spawned sub-agent ";
      else what = l.dir === "out" ? "Links to " : "Linked from ";
      var target = l.other >= 0
        ? '<button type="button" class="linkish jump" data-jump="' + l.other + '"><span class="kind-chip kind-' + esc(str("kind", l.other)) + '">' +
          esc(str("kind", l.other)) + "</span> " + esc(str("name", l.other)) + "</button>"
        : '<span class="mono">' + esc(l.ln.span_id || "?") + "</span> " + (l.ln.trace_id && l.ln.trace_id !== traceId
          ? '<a href="/traces/' + esc(l.ln.trace_id) + "?span=" + esc(l.ln.span_id || "") + '">in another trace</a>' : "");
      var callId = l.ln.tool_call_id ? ' <span class="mono muted">' + esc(l.ln.tool_call_id) + "</span>" : "";
      html += '<li class="link-' + esc(l.type) + '">' + esc(what) + target + callId + "</li>";
    });
    html += "</ul>";
    if (ls.length > LIMIT) html += '<p class="muted">and ' + (ls.length - LIMIT) + " more: the linked rows are marked in the tree.</p>";
    return html;
  }
  function closeInspector() {
    inspectorOpen = false;
    inspector.hidden = true;
    body.classList.remove("with-inspector");
    render();
  }

  // --- collapse / expand -------------------------------------------------------------------------
  function toggle(i, open) {
    if (!hasKids(i)) return;
    var want = open === undefined ? !collapsed[i] : !open;
    if (!!collapsed[i] === want) return;
    collapsed[i] = want ? 1 : 0;
    computeVisible();
    render();
  }
  function setAll(open) {
    if (open) collapsed.fill(0);
    else for (var i = 0; i < n; i++) collapsed[i] = hasKids(i) && C.depth[i] > 0 ? 1 : 0;
    computeVisible();
    if (sel >= 0) reveal(sel);
    render();
    if (sel >= 0) scrollToRow(sel, true);
  }

  // --- stepping through decisions and errors -----------------------------------------------------
  function jump(dir) {
    if (!interesting.length) return;
    var cand = -1, k;
    if (dir > 0) {
      for (k = 0; k < interesting.length; k++) if (interesting[k] > sel && (!keep || keep[interesting[k]])) { cand = interesting[k]; break; }
      if (cand < 0) cand = interesting[0];
    } else {
      for (k = interesting.length - 1; k >= 0; k--) if (interesting[k] < sel && (!keep || keep[interesting[k]])) { cand = interesting[k]; break; }
      if (cand < 0) cand = interesting[interesting.length - 1];
    }
    select(cand, { center: true });
  }
  function updateJumpCount() {
    var el = $("jump-count");
    if (!D) return;
    var k = interesting.indexOf(sel);
    el.textContent = interesting.length ? (k >= 0 ? (k + 1) + " / " : "") + interesting.length + " flagged" : "nothing flagged";
    el.title = "spans with a policy decision other than allow, or an error (n / Shift+N)";
    $("jump-next").disabled = $("jump-prev").disabled = !interesting.length;
  }

  // --- filters: search text, or a graph node -----------------------------------------------------
  function applyFilter(pred, label) {
    match = new Uint8Array(n);
    keep = new Uint8Array(n);
    var count = 0, i;
    for (i = 0; i < n; i++) if (pred(i)) { match[i] = 1; keep[i] = 1; count++; }
    for (i = n - 1; i > 0; i--) if (keep[i] && parent[i] >= 0) keep[parent[i]] = 1;
    filterLabel = label;
    computeVisible();
    scroller.scrollTop = 0;
    render();
    return count;
  }
  function clearFilter(keepInput) {
    match = keep = null;
    activeNode = -1;
    chip.hidden = true;
    searchCount.textContent = "";
    if (!keepInput) search.value = "";
    if (graphBuilt) highlightNode(-1);
    computeVisible();
    render();
  }
  function runSearch() {
    var q = search.value.trim().toLowerCase();
    if (!q) { clearFilter(true); return; }
    activeNode = -1; chip.hidden = true;
    if (graphBuilt) highlightNode(-1);
    var hit = new Uint8Array(S.length), k;
    for (k = 0; k < S.length; k++) if (S[k].toLowerCase().indexOf(q) >= 0) hit[k] = 1;
    var decHit = {};
    D.decisions.forEach(function (d) {
      if ((d.rule_id || "").toLowerCase().indexOf(q) >= 0 || (d.reason || "").toLowerCase().indexOf(q) >= 0 ||
          d.effect.indexOf(q) >= 0) decHit[d.span] = 1;
    });
    var errs = D.errors;
    var count = applyFilter(function (i) {
      return (C.name[i] >= 0 && hit[C.name[i]]) || (C.agent[i] >= 0 && hit[C.agent[i]]) ||
        (C.model[i] >= 0 && hit[C.model[i]]) || (C.tool[i] >= 0 && hit[C.tool[i]]) ||
        (C.kind[i] >= 0 && hit[C.kind[i]]) || C.id[i].indexOf(q) === 0 || decHit[i] === 1 ||
        (C.err[i] === 1 && String(errs[i] || "").toLowerCase().indexOf(q) >= 0);
    }, q);
    searchCount.textContent = count + " match" + (count === 1 ? "" : "es");
  }
  function nextMatch(dir) {
    if (!match) return;
    var i = sel, steps = 0;
    do { i = (i + dir + n) % n; steps++; } while (!match[i] && steps <= n);
    if (match[i]) select(i, { center: true });
  }

  // --- the graph ---------------------------------------------------------------------------------
  function nodeSpans(k) {
    var node = D.graph.nodes[k], i;
    if (node.type !== "agent") return function (j) { return C.node[j] === k; };
    if (!agentNodeOf) {
      agentNodeOf = new Int32Array(n);
      for (i = 0; i < n; i++) {
        var own = C.node[i] >= 0 && D.graph.nodes[C.node[i]].type === "agent" ? C.node[i] : -1;
        agentNodeOf[i] = own >= 0 ? own : parent[i] >= 0 ? agentNodeOf[parent[i]] : -1;
      }
    }
    return function (j) { return agentNodeOf[j] === k; };
  }
  function filterNode(k) {
    if (activeNode === k) { clearFilter(false); return; }
    search.value = "";
    var node = D.graph.nodes[k];
    var count = applyFilter(nodeSpans(k), node.id);
    activeNode = k;
    highlightNode(k);
    chip.hidden = false;
    chip.innerHTML = "Showing the spans of " + esc(node.type) + " <strong>" + esc(node.label) + "</strong> (" + count +
      ') <button type="button" class="linkish" id="chip-clear" aria-label="Show every span">✕</button>';
    searchCount.textContent = "";
  }
  function highlightNode(k) {
    var gs = document.querySelectorAll("#graph-scroll .gnode");
    for (var j = 0; j < gs.length; j++) {
      var on = +gs[j].getAttribute("data-node") === k;
      gs[j].classList.toggle("active", on);
      gs[j].setAttribute("aria-pressed", on ? "true" : "false");
    }
  }

  // A layered layout, left to right: agents by their distance from a top-level agent (two
  // columns per level), each tool and model one column right of the deepest agent calling it.
  // Within a column, nodes are ordered by the mean position of their callers (two sweeps).
  function buildGraph() {
    var g = D.graph, nodes = g.nodes, edges = g.edges, N = nodes.length;
    var box = $("graph-scroll");
    if (!N) { box.innerHTML = '<p class="empty">No agents, tools or models in this trace.</p>'; graphBuilt = true; return; }
    var layer = new Array(N).fill(-1), incoming = [], k, e;
    for (k = 0; k < N; k++) incoming.push([]);
    edges.forEach(function (ed) { incoming[ed.to].push(ed.from); });
    var queue = [];
    for (k = 0; k < N; k++) {
      if (nodes[k].type === "agent" && !incoming[k].some(function (f) { return nodes[f].type === "agent"; })) { layer[k] = 0; queue.push(k); }
    }
    while (queue.length) {  // breadth first over agent -> agent edges
      var a = queue.shift();
      edges.forEach(function (ed) {
        if (ed.from === a && nodes[ed.to].type === "agent" && layer[ed.to] < 0) { layer[ed.to] = layer[a] + 2; queue.push(ed.to); }
      });
    }
    for (k = 0; k < N; k++) if (nodes[k].type === "agent" && layer[k] < 0) layer[k] = 0;  // only in a cycle
    for (k = 0; k < N; k++) {
      if (nodes[k].type === "agent") continue;
      var best = -1;
      incoming[k].forEach(function (f) { if (layer[f] > best) best = layer[f]; });
      layer[k] = best + 1;
    }
    var maxL = 0;
    for (k = 0; k < N; k++) if (layer[k] > maxL) maxL = layer[k];
    var cols = [];
    for (var L = 0; L <= maxL; L++) cols.push([]);
    for (k = 0; k < N; k++) cols[layer[k]].push(k);
    cols = cols.filter(function (c) { return c.length; });
    var col = new Array(N), row = new Array(N);
    cols.forEach(function (c, ci) { c.forEach(function (kk, ri) { col[kk] = ci; row[kk] = ri; }); });
    for (var sweep = 0; sweep < 2; sweep++) {
      for (var ci = 1; ci < cols.length; ci++) {
        var bary = {};
        cols[ci].forEach(function (kk) {
          var s = 0, m = 0;
          incoming[kk].forEach(function (f) { if (col[f] < ci) { s += row[f]; m++; } });
          bary[kk] = m ? s / m : row[kk];
        });
        cols[ci].sort(function (x, y) { return bary[x] - bary[y] || x - y; });
        cols[ci].forEach(function (kk, ri) { row[kk] = ri; });
      }
    }
    var W = 190, H = 34, GX = 80, GY = 14, PAD = 12;
    var maxRows = 0;
    cols.forEach(function (c) { if (c.length > maxRows) maxRows = c.length; });
    var width = PAD * 2 + cols.length * W + (cols.length - 1) * GX, height = PAD * 2 + maxRows * (H + GY) - GY;
    var pos = function (kk) {  // centre each column vertically
      var c = cols[col[kk]], off = (maxRows - c.length) * (H + GY) / 2;
      return { x: PAD + col[kk] * (W + GX), y: PAD + off + row[kk] * (H + GY) };
    };
    if (edges.some(function (ed) { return col[ed.to] <= col[ed.from]; })) height += 36;  // room for back edges
    var svg = '<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="' + width + '" height="' + height +
      '" viewBox="0 0 ' + width + " " + height + '" role="group" aria-label="Call graph">' +
      '<defs><marker id="garrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">' +
      '<path d="M0,0 L10,5 L0,10 z" class="garrow"/></marker></defs>';
    edges.forEach(function (ed) {
      var p1 = pos(ed.from), p2 = pos(ed.to);
      var x1 = p1.x + W, y1 = p1.y + H / 2, x2 = p2.x, y2 = p2.y + H / 2, path;
      if (x2 > x1) {
        var mx = (x1 + x2) / 2;
        path = "M" + x1 + "," + y1 + " C" + mx + "," + y1 + " " + mx + "," + y2 + " " + x2 + "," + y2;
      } else {  // a call back to an earlier column (agents handing work back and forth)
        x1 = p1.x + W / 2; y1 = p1.y + H; x2 = p2.x + W / 2; y2 = p2.y + H;
        var dip = Math.max(y1, y2) + 30;
        path = "M" + x1 + "," + y1 + " C" + x1 + "," + dip + " " + x2 + "," + dip + " " + x2 + "," + y2;
      }
      // the count beside the arrowhead: the middle of a long edge may lie under another node
      var lx = x2 > x1 ? x2 - 16 : x2 + 14, ly = x2 > x1 ? y2 - 5 : y2 + 14;
      svg += '<g class="gedge' + (ed.errors ? " has-errors" : "") + '"><path d="' + path + '" marker-end="url(#garrow)"/>' +
        '<text x="' + lx + '" y="' + ly + '" text-anchor="middle">' + ed.count + (ed.errors ? " (" + ed.errors + " failed)" : "") +
        "</text><title>" + esc(nodes[ed.from].label + " → " + nodes[ed.to].label + ": " + ed.count + " call" +
        (ed.count === 1 ? "" : "s") + (ed.errors ? ", " + ed.errors + " failed" : "")) + "</title></g>";
    });
    for (k = 0; k < N; k++) {
      var nd = nodes[k], p = pos(k), label = nd.label.length > 24 ? nd.label.slice(0, 23) + "…" : nd.label;
      svg += '<g class="gnode gnode-' + esc(nd.type) + (nd.errors ? " has-errors" : "") + '" data-node="' + k +
        '" data-node-type="' + esc(nd.type) + '" data-label="' + esc(nd.label) + '" role="button" tabindex="0" aria-pressed="false" aria-label="' +
        esc(nd.type + " " + nd.label + ": " + nd.spans + " span" + (nd.spans === 1 ? "" : "s") + (nd.errors ? ", " + nd.errors + " failed" : "") +
        ". Show its spans") + '" transform="translate(' + p.x + "," + p.y + ')">' +
        '<rect width="' + W + '" height="' + H + '" rx="6"/><rect class="gkind" width="5" height="' + H + '" rx="2"/>' +
        '<text x="12" y="14" class="gtype">' + esc(nd.type) + "</text>" +
        '<text x="12" y="28" class="glabel">' + esc(label) + "</text>" +
        '<text x="' + (W - 8) + '" y="14" text-anchor="end" class="gcount">' + nd.spans + "×" +
        (nd.errors ? " · " + nd.errors + " ✕" : "") + "</text><title>" + esc(nd.label) + "</title></g>";
    }
    box.innerHTML = svg + "</svg>";
    graphBuilt = true;
    if (activeNode >= 0) highlightNode(activeNode);
  }
  function toggleGraph(show) {
    var sec = $("trace-graph"), btn = $("graph-toggle");
    if (show === undefined) show = sec.hidden;
    sec.hidden = !show;
    btn.setAttribute("aria-pressed", show ? "true" : "false");
    if (show && !graphBuilt && D) buildGraph();
    sizeViewport();
    render();
  }

  // --- help --------------------------------------------------------------------------------------
  function toggleHelp(show) {
    if (show === undefined) show = help.hidden;
    help.hidden = !show;
    if (show) $("help-close").focus();
  }

  // --- events ------------------------------------------------------------------------------------
  scroller.addEventListener("scroll", schedule, { passive: true });
  window.addEventListener("resize", function () { if (D) { sizeViewport(); render(); } });
  rowsEl.addEventListener("click", function (e) {
    var rowEl = e.target.closest(".trow");
    if (!rowEl) return;
    var i = +rowEl.getAttribute("data-i");
    if (e.target.classList.contains("twisty") && !e.target.classList.contains("leaf")) { toggle(i); return; }
    scroller.focus({ preventScroll: true });
    if (window.__proctorTrace) window.__proctorTrace.clickAt = performance.now();
    select(i, { open: true });
  });
  rowsEl.addEventListener("dblclick", function (e) {
    var rowEl = e.target.closest(".trow");
    if (rowEl) toggle(+rowEl.getAttribute("data-i"));
  });
  document.addEventListener("click", function (e) {
    var t = e.target.closest("[data-jump], [data-jump-id], #chip-clear");
    if (!t || !D) return;
    if (t.id === "chip-clear") { clearFilter(false); return; }
    var i = t.hasAttribute("data-jump") ? +t.getAttribute("data-jump") : C.id.indexOf(t.getAttribute("data-jump-id"));
    if (i >= 0) { e.preventDefault(); select(i, { center: true, open: true }); }
  });
  $("inspector-close").addEventListener("click", closeInspector);
  $("jump-next").addEventListener("click", function () { jump(1); });
  $("jump-prev").addEventListener("click", function () { jump(-1); });
  $("expand-all").addEventListener("click", function () { if (D) setAll(true); });
  $("collapse-all").addEventListener("click", function () { if (D) setAll(false); });
  $("graph-toggle").addEventListener("click", function () { toggleGraph(); });
  $("zoom-toggle").addEventListener("click", function () { if (D) toggleZoom(); });
  $("help-toggle").addEventListener("click", function () { toggleHelp(); });
  $("help-close").addEventListener("click", function () { toggleHelp(false); });
  var searchTimer = null;
  search.addEventListener("input", function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(function () { if (D) runSearch(); }, 120);
  });
  $("graph-scroll").addEventListener("click", function (e) {
    var g = e.target.closest(".gnode");
    if (g) filterNode(+g.getAttribute("data-node"));
  });
  $("graph-scroll").addEventListener("keydown", function (e) {
    var g = e.target.closest(".gnode");
    if (g && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); filterNode(+g.getAttribute("data-node")); }
  });

  function typing(t) {
    return t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  }
  // On window, so console.js (on document) sees every key first: its "g then key" navigation
  // keeps working, and a key that follows "g" is left to it.
  var pendingG = false;
  window.addEventListener("keydown", function (e) {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || !D) return;
    var t = e.target, key = e.key;
    if (typing(t)) {
      if (t === search && key === "Enter") { e.preventDefault(); if (search.value.trim()) nextMatch(e.shiftKey ? -1 : 1); }
      else if (t === search && key === "Escape") { e.preventDefault(); clearFilter(false); search.blur(); }
      return;
    }
    if (pendingG) { pendingG = false; return; }
    if (key === "g") { pendingG = true; setTimeout(function () { pendingG = false; }, 1500); return; }
    var onControl = t && t.closest && t.closest("button, a, summary, [role=button]");
    var inInspector = t && t.closest && t.closest("#inspector");
    var visIx = sel >= 0 ? vpos(sel) : -1;
    var page = Math.max(1, Math.floor(scroller.clientHeight / ROW_H) - 1);
    switch (key) {
      case "ArrowDown": case "j":
        if (inInspector && key === "ArrowDown") return;
        select(visible[Math.min(visCount - 1, visIx + 1)]); break;
      case "ArrowUp": case "k":
        if (inInspector && key === "ArrowUp") return;
        select(visible[Math.max(0, visIx < 0 ? 0 : visIx - 1)]); break;
      case "PageDown": if (inInspector) return; select(visible[Math.min(visCount - 1, Math.max(0, visIx) + page)]); break;
      case "PageUp": if (inInspector) return; select(visible[Math.max(0, visIx - page)]); break;
      case "Home": if (inInspector) return; select(visible[0]); break;
      case "End": if (inInspector) return; select(visible[visCount - 1]); break;
      case "ArrowLeft":
        if (sel < 0) return;
        if (hasKids(sel) && !collapsed[sel]) toggle(sel, false);
        else if (parent[sel] >= 0) select(parent[sel]);
        break;
      case "ArrowRight":
        if (sel < 0) return;
        if (collapsed[sel]) toggle(sel, true);
        else if (hasKids(sel)) select(sel + 1);
        break;
      case "Enter":
        if (onControl) return;
        if (sel < 0 && visCount) select(visible[0]);
        if (sel >= 0) openInspector(sel);
        break;
      case "Escape":
        if (!help.hidden) toggleHelp(false);
        else if (inspectorOpen) closeInspector();
        else if (match) clearFilter(false);
        else return;
        break;
      case "z": toggleZoom(); break;
      case "n": jump(1); break;
      case "N": jump(-1); break;
      case "?": toggleHelp(); break;
      default: return;
    }
    e.preventDefault();
  });

  load();
})();
