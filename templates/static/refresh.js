// Optional auto-refresh, off by default and remembered per browser. Without JavaScript the
// checkbox stays hidden and every page still works; reload to see new figures.
(function () {
  "use strict";
  var box = document.getElementById("auto-refresh");
  if (!box) { return; }
  var period = Math.max(5, Number(document.body.getAttribute("data-refresh")) || 30) * 1000;
  var timer = null;
  var stored = null;
  try { stored = window.localStorage.getItem("gateway-refresh"); } catch (e) { stored = null; }
  box.checked = stored === "on";
  box.parentElement.hidden = false;
  function schedule() {
    window.clearTimeout(timer);
    if (!box.checked) { return; }
    timer = window.setTimeout(function () {
      if (document.hidden) { schedule(); } else { window.location.reload(); }
    }, period);
  }
  box.addEventListener("change", function () {
    try { window.localStorage.setItem("gateway-refresh", box.checked ? "on" : "off"); } catch (e) { }
    schedule();
  });
  schedule();
}());
