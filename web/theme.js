// theme.js: loaded (not as a module) in <head> so that the saved theme applies before the
// first paint; no flash of the wrong colours. The toggle lives in common.js.
(function () {
  var saved = null;
  try { saved = localStorage.getItem("moonspace-theme"); } catch (e) { /* private mode */ }
  var dark = saved ? saved === "dark"
    : !!(window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.setAttribute("data-theme", dark ? "dark" : "light");
})();
