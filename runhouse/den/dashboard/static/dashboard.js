// Den dashboard: the one script. Press "/" to jump to the page's search or filter box.
"use strict";
document.addEventListener("keydown", function (event) {
  const target = event.target;
  const typing = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement ||
    target instanceof HTMLSelectElement;
  if (event.key !== "/" || typing || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  const box = document.querySelector("input[type=search], form.filters input");
  if (box) {
    event.preventDefault();
    box.focus();
  }
});
