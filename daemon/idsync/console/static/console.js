// Progressive enhancement only: every action works without this file.
// [data-refresh]: reload the element's content from its URL every data-every seconds;
//   with data-reload-when-ended, the whole page once the content shows a run that ended
//   (its audit, written as it ran, is on the page only then).
// [data-cron-preview]: describe the expression and its next fires as it is typed.
// form[data-confirm]: ask before submitting.
(function () {
  "use strict";
  function refresh(el) {
    var every = parseFloat(el.getAttribute("data-every") || "3") * 1000;
    setInterval(function () {
      if (document.hidden) { return; }
      fetch(el.getAttribute("data-refresh"), {credentials: "same-origin"}).then(function (r) {
        // Sent to the login form: the session ended. Show that page, not a login form inside this one.
        if (r.redirected) { window.location.reload(); throw new Error("session ended"); }
        if (r.ok) { return r.text(); }
        throw new Error(r.status);
      }).then(function (html) {
        el.innerHTML = html;
        if (el.hasAttribute("data-reload-when-ended") &&
            el.querySelector("[data-state]:not([data-state='ACTIVE'])")) { window.location.reload(); }
      }).catch(function () {});
    }, every);
  }
  function cron(input) {
    var out = document.getElementById(input.getAttribute("aria-describedby"));
    var zone = document.getElementById("timezone");
    var timer = null;
    function update() {
      var url = input.getAttribute("data-cron-preview") + "?schedule=" + encodeURIComponent(input.value) +
        "&timezone=" + encodeURIComponent(zone ? zone.value : "UTC");
      fetch(url, {credentials: "same-origin"}).then(function (r) { return r.text(); })
        .then(function (html) {
          out.innerHTML = html;
          input.setAttribute("aria-invalid", out.querySelector("#cron-problem") ? "true" : "false");
        }).catch(function () {});
    }
    function later() { clearTimeout(timer); timer = setTimeout(update, 150); }
    input.addEventListener("input", later);
    if (zone) { zone.addEventListener("input", later); }
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
    document.querySelectorAll("[data-cron-preview]").forEach(cron);
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (e) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
      });
    });
  });
}());
