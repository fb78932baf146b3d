(labels) => {
  // Annotate-tab keys. Each action clicks a button of the tab (by elem_id) or opens a text box; the bindings
  // can be changed in the "Keys" panel and are kept in this browser (localStorage). Keys never type into a
  // text box: a box takes keys only while it has the focus (the edit and add boxes while open, after e / c),
  // and leaving the name box (Enter or a click elsewhere) puts the focus on the captions.
  const STORE = "remote_scorer_keys";
  const ACTIONS = [
    ["up", "btn-up", ["ArrowUp", "k"]], ["down", "btn-down", ["ArrowDown", "j"]],
    ["accept", "btn-accept", ["a"]], ["reject", "btn-reject", ["x"]],
    ["next", "btn-next", [" "]], ["previous", "btn-previous", ["p", "ArrowLeft"]],
    ["undo", "btn-undo", ["Backspace"]], ["edit", "edit-box", ["e"]], ["add", "add-box", ["c"]],
    ["hide_caption", "btn-hide-caption", ["h"]], ["hide_image", "btn-hide-image", ["H"]],
    ["settings", "key-settings-panel", ["?"]],
  ];
  for (let n = 1; n <= 9; n++) ACTIONS.push(["best_" + n, "btn-best-" + n, [String(n)]]);
  const BOXES = { "edit-box": "btn-edit", "add-box": "btn-add" };  // Enter in the box clicks the button
  const lang = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
  const label = (action) => (labels[lang] || labels.en)[action.replace(/_\d$/, "")] + (
    /_\d$/.test(action) ? " " + action.slice(-1) : "");

  const defaults = () => Object.fromEntries(ACTIONS.map(([action, , keys]) => [action, keys]));
  let bindings = defaults();
  try { Object.assign(bindings, JSON.parse(localStorage.getItem(STORE) || "{}")); } catch (e) { /* keep defaults */ }
  const target = (key) => ACTIONS.find(([action]) => (bindings[action] || []).includes(key));
  const keyName = (key) => ({ " ": "Space", "ArrowUp": "↑", "ArrowDown": "↓", "ArrowLeft": "←" })[key] || key;

  const annotateVisible = () => {
    const table = document.getElementById("caption-table");
    return table !== null && table.offsetParent !== null;
  };
  const inner = (id, tag) => {
    const el = document.getElementById(id);
    return el && (el.matches(tag) ? el : el.querySelector(tag));
  };
  const focusCaptions = () => {
    const table = document.getElementById("caption-table");
    if (table) { table.tabIndex = -1; table.focus({ preventScroll: true }); }
  };
  const setBox = (box, value) => {
    box.value = value;
    box.dispatchEvent(new Event("input", { bubbles: true }));
  };

  // -- the keys ------------------------------------------------------------------------------------------
  let capturing = null;  // the action whose key the settings panel is waiting for
  document.addEventListener("keydown", (event) => {
    const el = event.target;
    if (capturing) { capture(event); return; }
    const typing = el && (el.isContentEditable || ["TEXTAREA", "SELECT"].includes(el.tagName)
      || (el.tagName === "INPUT" && !["checkbox", "radio", "button", "range"].includes(el.type)));
    if (typing) {
      const holder = el.closest("[id]");
      const box = holder && Object.keys(BOXES).find((id) => el.closest("#" + id));
      if (box && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault(); event.stopPropagation();
        inner(BOXES[box], "button").click();
        focusCaptions();
      } else if (box && event.key === "Escape") {
        setBox(el, box === "add-box" ? "" : (el.dataset.original ?? el.value));
        focusCaptions();
      } else if (el.closest("#annotator-name") && event.key === "Enter") {
        setTimeout(focusCaptions, 0);  // the name is saved (submit); the keys go to the captions
      } else if (event.key === "Escape") {
        el.blur(); focusCaptions();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || !annotateVisible()) return;
    const found = target(event.key);
    if (!found) return;
    const [action, id] = found;
    event.preventDefault();
    if (action === "edit" || action === "add") {
      const box = inner(id, "textarea, input");
      if (box) { box.dataset.original = box.value; box.focus(); }
    } else if (action === "settings") {
      const panel = document.getElementById(id);
      const head = panel && panel.querySelector("button, .label-wrap");
      if (head) { head.click(); panel.scrollIntoView({ block: "nearest" }); }
    } else {
      const button = inner(id, "button");
      if (button) button.click();
    }
  }, true);
  document.addEventListener("focusout", (event) => {  // leaving the name box: the keys go to the captions
    if (event.target.closest && event.target.closest("#annotator-name") && event.relatedTarget === null) {
      setTimeout(() => { if (document.activeElement === document.body) focusCaptions(); }, 0);
    }
  });

  // -- the settings panel ----------------------------------------------------------------------------------
  const save = () => localStorage.setItem(STORE, JSON.stringify(bindings));
  function capture(event) {
    event.preventDefault(); event.stopPropagation();
    if (event.key !== "Escape" && !["Shift", "Control", "Alt", "Meta"].includes(event.key)) {
      for (const [action] of ACTIONS) bindings[action] = (bindings[action] || []).filter((k) => k !== event.key);
      bindings[capturing] = [event.key];
      save();
    }
    if (["Shift", "Control", "Alt", "Meta"].includes(event.key)) return;
    capturing = null;
    fillPanel(document.getElementById("key-settings"));
  }
  function fillPanel(panel) {
    if (!panel) return;
    panel.dataset.ready = "1";
    panel.replaceChildren();
    const table = document.createElement("table");
    table.className = "key-settings-table";
    for (const [action] of ACTIONS) {
      const row = table.insertRow();
      row.insertCell().textContent = label(action);
      const button = document.createElement("button");
      button.className = "key-binding";
      button.dataset.action = action;
      button.textContent = capturing === action ? labels[lang].press_key
        : (bindings[action] || []).map(keyName).join(" / ") || "—";
      button.addEventListener("click", () => { capturing = action; fillPanel(panel); });
      row.insertCell().appendChild(button);
    }
    const reset = document.createElement("button");
    reset.className = "key-reset";
    reset.textContent = labels[lang].reset_keys;
    reset.addEventListener("click", () => { bindings = defaults(); save(); fillPanel(panel); });
    panel.append(table, reset);
  }

  // -- keep the selected row in view; fill the settings panel when gradio renders it -------------------------
  let lastSelected = "", followUntil = 0;
  const scrollToSelected = () => {  // for a moment after the selection (or the image) changed: the user may scroll
    const row = [...document.querySelectorAll("#caption-table [role=row][data-index]")]
      .find((r) => (r.querySelector("[role=gridcell]")?.innerText || "").trim() === "▶");
    const key = row ? row.dataset.index + "|" + (document.getElementById("annotate-info")?.innerText || "") : "";
    if (key !== lastSelected) { lastSelected = key; followUntil = performance.now() + 1500; }
    if (!row || performance.now() > followUntil || !annotateVisible()) return;
    const box = row.getBoundingClientRect();
    if (box.top < 0 || box.bottom > window.innerHeight) row.scrollIntoView({ block: "center" });
  };
  let pending = false;
  new MutationObserver(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      scrollToSelected();
      const panel = document.getElementById("key-settings");
      if (panel && !panel.dataset.ready) fillPanel(panel);
    });
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
}
