// The report page's only script: zoom and pan the timeline, choose a window on the overview
// strip, jump to a violation's witness, hide event categories, show the hovered event.
// Everything is already drawn by the report; this only moves elements that carry `data-t`
// (simulated ms) and redraws the time axis. No libraries, no network.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var SPAN_MIN_MS = 10;
  var LABEL_ROOM = 170;
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var timeline = document.getElementById("timeline");
  var overview = document.getElementById("overview");
  var brush = document.getElementById("brush");
  var axis = document.getElementById("timeline-axis");
  var readout = document.getElementById("window-readout");
  var info = document.getElementById("event-info");
  var duration = Math.max(1, data.duration_ms);
  var X0 = +timeline.getAttribute("data-x0");
  var PW = +timeline.getAttribute("data-width");
  var OX0 = +overview.getAttribute("data-x0");
  var OPW = +overview.getAttribute("data-width");
  var view = { start: data.focus.start_ms, end: data.focus.end_ms };

  // Cache what moves and when it happened: reading attributes on every frame is slow.
  var movable = Array.prototype.slice.call(timeline.querySelectorAll("[data-t]"));
  var times = movable.map(function (el) { return +el.getAttribute("data-t"); });
  var ends = movable.map(function (el) {
    var t2 = el.getAttribute("data-t2");
    return t2 === null ? null : +t2;
  });
  var offsets = movable.map(function (el) { return +(el.getAttribute("data-dx") || 0); });

  function x(t) { return X0 + (t - view.start) / (view.end - view.start) * PW; }
  function r1(v) { return Math.round(v * 10) / 10; }
  function secs(ms) { return (ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 3) + " s"; }

  function tickStep(span) {
    var raw = Math.max(1, span / 10);
    for (var decade = 1; ; decade *= 10) {
      for (var i = 0, steps = [1, 2, 5]; i < steps.length; i++) {
        if (decade * steps[i] >= raw) { return decade * steps[i]; }
      }
    }
  }

  function tickLabel(t, step) {
    var s = t / 1000;
    if (step < 10) { return s.toFixed(3) + " s"; }
    if (step < 100) { return s.toFixed(2) + " s"; }
    if (step < 1000) { return s.toFixed(1) + " s"; }
    return Math.floor(s) + " s";
  }

  function svgElement(name, attributes, text) {
    var el = document.createElementNS(NS, name);
    for (var key in attributes) { el.setAttribute(key, attributes[key]); }
    if (text !== undefined) { el.textContent = text; }
    return el;
  }

  function drawAxis() {
    var labelY = axis.getAttribute("data-label-y");
    var top = axis.getAttribute("data-grid-top");
    var bottom = axis.getAttribute("data-grid-bottom");
    while (axis.firstChild) { axis.removeChild(axis.firstChild); }
    var step = tickStep(view.end - view.start);
    for (var t = Math.ceil(view.start / step) * step; t <= view.end; t += step) {
      var px = r1(x(t));
      axis.appendChild(svgElement("line", { "class": "grid", x1: px, x2: px, y1: top, y2: bottom }));
      axis.appendChild(svgElement("text", { "class": "tick", x: px, y: labelY }, tickLabel(t, step)));
    }
  }

  function place() {
    for (var i = 0; i < movable.length; i++) {
      var el = movable[i], px = x(times[i]);
      switch (el.tagName) {
        case "rect":
          if (ends[i] === null) {
            el.setAttribute("x", r1(px - 1.5));
          } else {
            el.setAttribute("x", r1(px));
            el.setAttribute("width", r1(Math.max(1, x(ends[i]) - px)));
          }
          break;
        case "line": el.setAttribute("x1", r1(px)); el.setAttribute("x2", r1(px)); break;
        case "circle": el.setAttribute("cx", r1(px)); break;
        case "text":
          // A band's label stays in view while its band does, and ends at its line when it
          // would run off the right edge (see `label_x` and `LABEL_ROOM` in svg.rs).
          if (ends[i] !== null && x(ends[i]) >= X0) { px = Math.max(px, X0); }
          var flip = px + LABEL_ROOM > X0 + PW;
          el.setAttribute("text-anchor", flip ? "end" : "start");
          el.setAttribute("x", r1(flip ? px - offsets[i] : px + offsets[i]));
          break;
      }
    }
    drawAxis();
    var b1 = OX0 + view.start / duration * OPW, b2 = OX0 + view.end / duration * OPW;
    brush.setAttribute("x", r1(b1));
    brush.setAttribute("width", r1(Math.max(2, b2 - b1)));
    readout.textContent = "showing " + secs(Math.round(view.start)) + " – " +
      secs(Math.round(view.end)) + " of " + secs(duration);
  }

  var pending = false;
  function setView(start, end) {
    var span = Math.min(duration, Math.max(SPAN_MIN_MS, end - start));
    start = Math.max(0, Math.min(start, duration - span));
    view = { start: start, end: start + span };
    if (!pending) {
      pending = true;
      window.requestAnimationFrame(function () { pending = false; place(); });
    }
  }

  function zoomAround(t, factor) {
    setView(t - (t - view.start) * factor, t + (view.end - t) * factor);
  }

  // Client x to SVG user units, then to simulated time.
  function userX(svg, clientX) {
    var box = svg.getBoundingClientRect();
    return (clientX - box.left) * svg.viewBox.baseVal.width / box.width;
  }
  function timelineTime(clientX) {
    return view.start + (userX(timeline, clientX) - X0) / PW * (view.end - view.start);
  }
  function overviewTime(clientX) {
    return Math.max(0, Math.min(duration, (userX(overview, clientX) - OX0) / OPW * duration));
  }

  // Drag the timeline to pan.
  var drag = null;
  timeline.addEventListener("pointerdown", function (e) {
    drag = { x: userX(timeline, e.clientX), start: view.start, end: view.end };
    timeline.setPointerCapture(e.pointerId);
    timeline.classList.add("dragging");
  });
  timeline.addEventListener("pointermove", function (e) {
    if (!drag) { return; }
    var dt = (userX(timeline, e.clientX) - drag.x) / PW * (drag.end - drag.start);
    setView(drag.start - dt, drag.end - dt);
  });
  function endDrag() { drag = null; timeline.classList.remove("dragging"); }
  timeline.addEventListener("pointerup", endDrag);
  timeline.addEventListener("pointercancel", endDrag);

  // Ctrl (or Cmd, or Alt) + wheel zooms around the pointer; Shift + wheel or a sideways swipe
  // pans; a plain wheel scrolls the page as usual.
  timeline.addEventListener("wheel", function (e) {
    var span = view.end - view.start;
    if (e.ctrlKey || e.metaKey || e.altKey) {
      e.preventDefault();
      zoomAround(timelineTime(e.clientX), Math.exp(e.deltaY * 0.002));
    } else if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
      e.preventDefault();
      var delta = (e.shiftKey ? e.deltaY : e.deltaX) / 1000 * span;
      setView(view.start + delta, view.end + delta);
    }
  }, { passive: false });

  // The overview strip: drag to choose a window, click to centre the current one there.
  var pick = null;
  overview.addEventListener("pointerdown", function (e) {
    pick = { t: overviewTime(e.clientX), x: e.clientX, moved: false };
    overview.setPointerCapture(e.pointerId);
  });
  overview.addEventListener("pointermove", function (e) {
    if (!pick) { return; }
    if (Math.abs(e.clientX - pick.x) > 3) { pick.moved = true; }
    if (pick.moved) {
      var t = overviewTime(e.clientX);
      setView(Math.min(pick.t, t), Math.max(pick.t, t));
    }
  });
  overview.addEventListener("pointerup", function () {
    if (pick && !pick.moved) {
      var half = (view.end - view.start) / 2;
      setView(pick.t - half, pick.t + half);
    }
    pick = null;
  });

  // Buttons and table rows that show a stretch of time, with some context either side.
  function showStretch(from, to) {
    var span = Math.max(200, to - from), pad = Math.max(500, span * 0.3);
    setView(from - pad, to + pad);
    timeline.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }
  document.addEventListener("click", function (e) {
    var target = e.target.closest("[data-from], [data-view], [data-zoom], [data-hide]");
    if (!target) { return; }
    if (target.hasAttribute("data-from")) {
      var from = +target.getAttribute("data-from"), to = +target.getAttribute("data-to");
      if (target.tagName === "BUTTON" && target.closest(".controls")) {
        setView(from, to);
      } else {
        showStretch(from, to);
      }
    } else if (target.hasAttribute("data-view")) {
      if (target.getAttribute("data-view") === "all") { setView(0, duration); }
      else { setView(data.focus.start_ms, data.focus.end_ms); }
    } else if (target.hasAttribute("data-zoom")) {
      zoomAround((view.start + view.end) / 2, +target.getAttribute("data-zoom"));
    } else {
      toggleCategory(target);
    }
  });

  // Hide or show one category (or one unknown event type) of marks.
  var hidden = {};
  var hiddenStyle = document.createElement("style");
  document.head.appendChild(hiddenStyle);
  function toggleCategory(button) {
    var cls = button.getAttribute("data-hide");
    hidden[cls] = !hidden[cls];
    button.classList.toggle("off", hidden[cls]);
    hiddenStyle.textContent = Object.keys(hidden).filter(function (k) { return hidden[k]; })
      .map(function (k) { return "#marks ." + k + "{display:none}"; }).join("\n");
  }

  // The hovered mark's event, in a line above the timeline (tooltips are slow to appear), and
  // every mark of the same message outlined across the lanes, the others dimmed.
  var marks = document.getElementById("marks");
  var related = [];
  function clearRelated() {
    related.forEach(function (el) { el.classList.remove("related"); });
    related = [];
    marks.classList.remove("relating");
  }
  marks.addEventListener("mouseover", function (e) {
    var title = e.target.querySelector && e.target.querySelector("title");
    if (title) { info.textContent = title.textContent; }
    clearRelated();
    var message = e.target.getAttribute && e.target.getAttribute("data-msg");
    if (message) {
      related = Array.prototype.slice.call(marks.querySelectorAll('[data-msg="' + message + '"]'));
      related.forEach(function (el) { el.classList.add("related"); });
      marks.classList.add("relating");
      var sender = message.split(".");
      info.textContent += "   ·   message d" + sender[0] + " m" + sender[1] + ": " +
        related.length + " events outlined";
    }
  });
  marks.addEventListener("mouseleave", clearRelated);

  // A link can open a given window: report.html#window=12000-15000 (simulated ms).
  var linked = /^#window=(\d+)-(\d+)$/.exec(window.location.hash);
  if (linked) { view = { start: +linked[1], end: Math.max(+linked[2], +linked[1] + SPAN_MIN_MS) }; }
  place();
  document.body.setAttribute("data-ready", "timeline");
})();
