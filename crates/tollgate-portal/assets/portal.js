// Tollgate portal: progressive enhancement only. Every page works without
// this file; it adds confirmations before destructive actions and
// copy buttons for tokens and commands.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // <form data-confirm="Release alice's seat?">: ask first.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }
  // <button data-copy="#id">: copy that element's text.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const source = document.querySelector(button.dataset.copy);
      if (!source) return;
      const text = source.value !== undefined ? source.value : source.textContent;
      try {
        await navigator.clipboard.writeText(text.trim());
        button.textContent = "Copied";
      } catch (_) {
        button.textContent = "Select and copy";
      }
    });
  }
});
