() => {
  // Annotate image: the wheel zooms at the pointer, dragging pans, a double click resets; a new image resets.
  const MAX_ZOOM = 16;
  const views = new WeakMap();  // <img> → {scale, x, y}
  const annotateImage = (target) =>
    target instanceof Element && target.closest("#annotate-image") ? target.closest("#annotate-image").querySelector("img") : null;
  const apply = (img, v) => {
    img.style.transformOrigin = "0 0";
    img.style.transform = `translate(${v.x}px, ${v.y}px) scale(${v.scale})`;
    img.style.cursor = v.scale > 1 ? "grab" : "";
    img.dataset.zoom = v.scale.toFixed(3);
    if (img.parentElement) img.parentElement.style.overflow = "hidden";
  };
  const viewOf = (img) => {
    if (!views.has(img)) views.set(img, { scale: 1, x: 0, y: 0 });
    return views.get(img);
  };
  const reset = (img) => { views.set(img, { scale: 1, x: 0, y: 0 }); apply(img, views.get(img)); };

  document.addEventListener("wheel", (event) => {
    const img = annotateImage(event.target);
    if (!img || event.target !== img) return;
    event.preventDefault();
    const v = viewOf(img);
    const rect = img.getBoundingClientRect();  // already transformed: the pointer's offset is in zoomed pixels
    const scale = Math.min(MAX_ZOOM, Math.max(1, v.scale * Math.exp(-event.deltaY * 0.0015)));
    const keep = 1 - scale / v.scale;  // the point under the pointer stays where it is
    v.x += (event.clientX - rect.left) * keep;
    v.y += (event.clientY - rect.top) * keep;
    v.scale = scale;
    if (scale === 1) { v.x = 0; v.y = 0; }
    apply(img, v);
  }, { passive: false });

  let drag = null;
  document.addEventListener("mousedown", (event) => {
    const img = annotateImage(event.target);
    if (!img || event.target !== img || event.button !== 0 || viewOf(img).scale <= 1) return;
    event.preventDefault();  // no native image drag
    drag = { img, x: event.clientX, y: event.clientY };
    img.style.cursor = "grabbing";
  });
  document.addEventListener("mousemove", (event) => {
    if (!drag) return;
    const v = viewOf(drag.img);
    v.x += event.clientX - drag.x;
    v.y += event.clientY - drag.y;
    drag.x = event.clientX;
    drag.y = event.clientY;
    apply(drag.img, v);
  });
  document.addEventListener("mouseup", () => {
    if (drag) apply(drag.img, viewOf(drag.img));
    drag = null;
  });
  document.addEventListener("dblclick", (event) => {
    const img = annotateImage(event.target);
    if (img && event.target === img) reset(img);
  });
  // "load" does not bubble, but it can be caught on the way down: a new picture starts unzoomed
  document.addEventListener("load", (event) => {
    const img = annotateImage(event.target);
    if (img && event.target === img) reset(img);
  }, true);
}
