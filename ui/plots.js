() => {
  // Every metric curve stays visible where two coincide: the first line wide and light, the next ones dashed
  // over it (vega draws one path per series; the style is set on the paths as they are drawn).
  const DASHES = ["", "8 4", "2 3", "10 3 2 3", "4 2", "1 3"];
  const style = () => {
    for (const plot of document.querySelectorAll("#train-loss-plot, #train-accuracy-plot")) {
      const lines = [...plot.querySelectorAll(".mark-line path")]
        .filter((p) => (p.getAttribute("stroke") || "none") !== "none");
      lines.forEach((path, n) => {
        const dash = DASHES[n % DASHES.length];
        if (path.style.strokeDasharray !== dash) path.style.strokeDasharray = dash;
        if (n === 0 && lines.length > 1) { path.style.strokeWidth = "4px"; path.style.strokeOpacity = "0.55"; }
      });
    }
  };
  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; style(); });
  }).observe(document.body, { childList: true, subtree: true });
}
