() => {
  // Annotate-tab keys: each key clicks a button of the tab (by elem_id); typing in a text box is left alone.
  const keys = {
    "a": "btn-accept", "x": "btn-reject", " ": "btn-next", "Backspace": "btn-undo",
    "ArrowUp": "btn-up", "k": "btn-up", "ArrowDown": "btn-down", "j": "btn-down",
  };
  for (let n = 1; n <= 9; n++) keys[String(n)] = "btn-best-" + n;
  const focusBox = { "e": "edit-box", "c": "add-box" };

  const annotateVisible = () => {
    const table = document.getElementById("caption-table");
    return table !== null && table.offsetParent !== null;
  };
  const clickButton = (id) => {
    const el = document.getElementById(id);
    const button = el && (el.tagName === "BUTTON" ? el : el.querySelector("button"));
    if (button) button.click();
    return Boolean(button);
  };

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
    if (typing && event.key === "Escape") { target.blur(); return; }  // Esc leaves a text box for the keys
    if (typing || event.ctrlKey || event.metaKey || event.altKey || !annotateVisible()) return;
    if (focusBox[event.key]) {
      const box = document.querySelector("#" + focusBox[event.key] + " textarea, #" + focusBox[event.key] + " input");
      if (box) { box.focus(); event.preventDefault(); }
      return;
    }
    const id = keys[event.key];
    if (id && clickButton(id)) event.preventDefault();
  });
}
